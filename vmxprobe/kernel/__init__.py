"""What Linux decides, one module per kernel rule family, named after it: feat_ctl,
x86_vmx_init (arch/x86/virt/hw.c), kvm_intel, NUMA placement, the root-VMCS plan and its
pages, and the verdict that brings them together."""
