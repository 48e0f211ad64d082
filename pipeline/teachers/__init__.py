"""Teachers: Monodepth2 day depth (`pipeline.teachers.monodepth2`), Mask2Former segmentation."""
