"""Training infrastructure: the one loop, its checkpoints, the teacher-output cache and the
normalized model outputs. The methods (losses, recipes, schedules) are in kdedge/distill/."""
