from kdedge_cli.main import main

main()
