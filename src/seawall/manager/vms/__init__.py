"""The VMs of the site's hosts, as their agents' hypervisor adapters see them."""
