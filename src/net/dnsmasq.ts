/**
 * dnsmasq for a network: one instance per network, bound to its bridge
 * only, DHCP with per-VM reservations (a hosts directory dnsmasq watches)
 * and DNS for `<vm>.<net>.nestvirt`. Pure planning of argv and files.
 */
import { join } from 'node:path';
import { netmask, parseCidr } from './subnet.js';
import type { Attachment, NetSpec } from './types.js';

/** Files of a network under <root>/nets/NAME/. */
export const NetFiles = {
  spec: 'spec.json',
  pid: 'dnsmasq.pid',
  leases: 'dnsmasq.leases',
  log: 'dnsmasq.log',
  hostsDir: 'dhcp-hosts',
  lock: '.lock',
} as const;

/** The DNS domain of a network's guests. */
export function domainOf(net: string): string {
  return `${net.toLowerCase().replace(/[^a-z0-9-]/g, '-')}.nestvirt`;
}

/** dnsmasq argv for a network whose files live in `dir`. */
export function dnsmasqArgv(
  spec: NetSpec,
  dir: string,
  exe = 'dnsmasq',
  opts: { asRoot?: boolean } = {},
): string[] {
  const prefix = parseCidr(spec.subnet).prefix;
  const dom = domainOf(spec.name);
  return [
    exe,
    '--conf-file=',
    `--pid-file=${join(dir, NetFiles.pid)}`,
    `--dhcp-leasefile=${join(dir, NetFiles.leases)}`,
    `--dhcp-hostsdir=${join(dir, NetFiles.hostsDir)}`,
    `--log-facility=${join(dir, NetFiles.log)}`,
    `--interface=${spec.bridge}`,
    '--bind-interfaces',
    '--except-interface=lo',
    `--listen-address=${spec.gateway}`,
    `--dhcp-range=${spec.dhcpRange[0]},${spec.dhcpRange[1]},${netmask(prefix)},1h`,
    `--dhcp-option=option:mtu,${spec.mtu}`,
    '--dhcp-authoritative',
    `--domain=${dom}`,
    `--local=/${dom}/`,
    '--expand-hosts',
    '--no-hosts',
    '--strict-order',
    // dnsmasq drops to `nobody`, which must read the hosts directory; where a
    // parent directory is closed to others (a 0700 home), it keeps root.
    ...(opts.asRoot ? ['--user=root'] : []),
  ];
}

/** The reservation line for a VM (a file of its own in the hosts directory). */
export function hostLine(a: Attachment): string {
  return `${a.mac},${a.ip},${a.vm.toLowerCase().replace(/[^a-z0-9-]/g, '-')}\n`;
}

export interface Lease {
  expiry: number;
  mac: string;
  ip: string;
  hostname: string | null;
}

/** Parses dnsmasq's lease file (`expiry mac ip hostname clientid` per line). */
export function parseLeases(text: string): Lease[] {
  const out: Lease[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4 || !/^\d+$/.test(f[0]!)) continue;
    out.push({
      expiry: Number(f[0]),
      mac: f[1]!.toLowerCase(),
      ip: f[2]!,
      hostname: f[3] === '*' ? null : f[3]!,
    });
  }
  return out;
}
