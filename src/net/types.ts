/**
 * Data types of nestvirt networks: the network spec stored in
 * <root>/nets/NAME/spec.json, a VM's attachment (its tap and address) and
 * its exposures, both stored in the VM's directory so they go with it.
 */

/** A private network: a Linux bridge with a gateway, DHCP/DNS and NAT. */
export interface NetSpec {
  name: string;
  /** The Linux bridge, `nv-<name>` or `nv-<hash>` (≤15 chars). */
  bridge: string;
  /** IPv4 subnet in CIDR form, e.g. `10.200.0.0/24`. */
  subnet: string;
  /** The host's address on the bridge (first host address). */
  gateway: string;
  /** The bridge MTU, and the MTU handed to guests over DHCP. */
  mtu: number;
  /** Where the MTU came from: the uplink, `--mtu`, or 1500 without an uplink. */
  mtuSource: 'uplink' | 'flag' | 'default';
  /** The interface of the default route when the network was made. */
  uplink: string | null;
  /** Masquerade traffic leaving the subnet. */
  nat: boolean;
  /** Dynamic DHCP range for guests nestvirt did not reserve an address for. */
  dhcpRange: [string, string];
  created: string;
}

/** A VM's NIC on a network (vms/VM/nic.json). */
export interface Attachment {
  vm: string;
  network: string;
  /** The tap interface, `nvt-<hash>`. */
  tap: string;
  /** Stable MAC derived from the VM name. */
  mac: string;
  /** The address reserved for this MAC in dnsmasq's hosts directory. */
  ip: string;
}

export type Proto = 'tcp' | 'udp';

/** One exposed port of a VM (an entry of vms/VM/exposures.json). */
export interface Exposure {
  vm: string;
  /** The guest's port. */
  port: number;
  proto: Proto;
  /** The address the port is reachable on, or null for every local address. */
  onAddr: string | null;
  /** The port on the host side. */
  onPort: number;
  /** The guest address the rules send traffic to (follows the lease). */
  target: string;
  network: string;
  /** The alias address nestvirt added to the uplink for this exposure, if any. */
  addedAlias: { dev: string; addr: string } | null;
  created: string;
}
