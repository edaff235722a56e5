"""Port forwarding on the hypervisor: firewall rules, libvirt hooks, the rules file.

`rules` is plain standard-library Python and is also the body of the hooks libvirtd runs;
`engine` is what the host worker calls (it reads Django settings, never the database).
"""
