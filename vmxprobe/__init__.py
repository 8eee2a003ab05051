"""vmxprobe: will Linux bring up VMX on every CPU of this host, and where do the root VMCS pages go?"""

__version__ = "0.1.0"
