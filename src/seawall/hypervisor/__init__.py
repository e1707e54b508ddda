"""Hypervisor adapters: what an agent knows and does about the VMs of its host."""
