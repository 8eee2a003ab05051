"""Where facts come from: a live host under a root directory, or a recorded fixture; the
fixture format; the kernel's cpulist formats; what sysfs shows of CPUs and NUMA nodes; and
the readings one scan takes of every CPU."""
