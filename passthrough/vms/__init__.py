"""The VMs on a host and the PCI functions they hold: read them, give them devices, take them back.

Three kinds of VM, one model (:mod:`passthrough.vms.model`):

* ``libvirt``: domains of ``qemu:///system``: :mod:`~passthrough.vms.domainxml` reads and
  edits domain XML, :mod:`~passthrough.vms.libvirt` plans an attach or detach in it (pure;
  :mod:`~passthrough.vms.rootports` says which root port a card takes and which a detach removes),
  :mod:`~passthrough.vms.libvirtconn` is the connection (libvirt-python, imported lazily),
  :mod:`~passthrough.vms.libvirtconfig` reads, defines and undoes, and
  :mod:`~passthrough.vms.libvirtd` attaches and detaches;
* ``proxmox``: Proxmox VE VMs, ``/etc/pve/qemu-server/<vmid>.conf`` and ``qm``
  (:mod:`passthrough.vms.proxmox`, with :mod:`~passthrough.vms.pveconf` for the file format
  and :mod:`~passthrough.vms.pvenode` for reading a node);
* ``qemu``: a plain QEMU process with a QMP socket (:mod:`passthrough.vms.qmp`, with
  :mod:`~passthrough.vms.qmpwire` for the monitor's conversation).

:mod:`passthrough.vms.give` holds the operations the worker runs (attach, detach, undo,
define), in the shape of :mod:`passthrough.ops`: validate against the live host, act,
verify, roll back on failure, and keep the configuration before and after for undo.
:mod:`passthrough.vms.validate` holds the checks every attach makes, and
:mod:`~passthrough.vms.romfile` the one a ROM file passes before root hands it to a VM
(a regular file inside the hypervisors' own firmware directories).

May import: ``passthrough.host``, ``passthrough.errors``, ``passthrough.pci``,
``passthrough.configgen`` and ``passthrough.ops``; nothing in passthrough imports it but the CLI.
"""
