"""A training world that sounds like music: songs rendered from sampled instruments, recorded
drum kits and sung words (see `songgen.world.render`); `python -m songgen.world` writes one."""
