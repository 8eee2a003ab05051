"""A host's topology with the kernel's placement of its CPUs, as one object: what the
topology tests look at."""

from dataclasses import dataclass

from vmxprobe.host.topology import Topology
from vmxprobe.kernel.numa import NodeMap


@dataclass
class Placed:
    """A host's topology with the kernel's placement: what a plan is built from."""

    topology: Topology
    placement: NodeMap

    def __getattr__(self, name):
        if hasattr(self.placement, name):
            return getattr(self.placement, name)
        return getattr(self.topology, name)

    @property
    def notes(self):
        return (
            self.topology.notes
            + self.placement.notes
            + self.topology.node_notes
            + self.placement.serving_notes
        )

    @property
    def missing(self):
        return self.topology.missing + self.placement.missing
