/**
 * IPv4 subnets: parsing, overlap checks and a first-free allocator. Pure.
 */
import { UsageError } from '../errors.js';

export interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  base: number;
  prefix: number;
}

/** Parses a dotted quad; undefined when it is not one. */
export function parseIp(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s.trim());
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses `A.B.C.D/N` (host bits must be zero) or throws a UsageError naming the value. */
export function parseCidr(s: string, what = 'subnet'): Cidr {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(s.trim());
  const ip = m ? parseIp(m[1]!) : undefined;
  const prefix = m ? Number(m[2]) : NaN;
  if (ip === undefined || !(prefix >= 0 && prefix <= 32))
    throw new UsageError(
      'net.bad-subnet',
      `${what} must be an IPv4 CIDR like 10.200.0.0/24, got ${JSON.stringify(s)}`,
    );
  if ((ip & ~mask(prefix)) >>> 0 !== 0)
    throw new UsageError(
      'net.bad-subnet',
      `${what} ${JSON.stringify(s)} has host bits set`,
      `use ${formatCidr({ base: (ip & mask(prefix)) >>> 0, prefix })}`,
    );
  return { base: ip, prefix };
}

/** Parses a route/address destination that may omit the prefix (`default` → 0/0). */
export function parseLoose(s: string, prefix?: number): Cidr | undefined {
  if (s === 'default') return { base: 0, prefix: 0 };
  const [a, p] = s.split('/');
  const ip = parseIp(a ?? '');
  if (ip === undefined) return undefined;
  const pre = p !== undefined ? Number(p) : (prefix ?? 32);
  return { base: (ip & mask(pre)) >>> 0, prefix: pre };
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.base)}/${c.prefix}`;
}

export function size(c: Cidr): number {
  return 2 ** (32 - c.prefix);
}

export function contains(c: Cidr, ip: number): boolean {
  return (ip & mask(c.prefix)) >>> 0 === c.base;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return (a.base & mask(p)) >>> 0 === (b.base & mask(p)) >>> 0;
}

/** Something a new subnet must not overlap, with the reason shown to people. */
export interface Taken {
  cidr: Cidr;
  what: string;
}

/** Well-known networks other tools create on demand; nestvirt keeps away from them. */
export const WELL_KNOWN: Taken[] = [
  {
    cidr: { base: parseIp('192.168.122.0')!, prefix: 24 },
    what: "libvirt's default network (virbr0)",
  },
  { cidr: { base: parseIp('172.17.0.0')!, prefix: 16 }, what: "Docker's default bridge (docker0)" },
];

/** Returns the first thing `c` overlaps, ignoring default routes (0/0). */
export function firstOverlap(c: Cidr, taken: Taken[]): Taken | undefined {
  return taken.find((t) => t.cidr.prefix > 0 && overlaps(c, t.cidr));
}

/** Candidates the allocator walks: 10.200.0.0/24 … 10.255.255.0/24, then 172.31/192.168 ones. */
export function* candidates(prefix = 24): Generator<Cidr> {
  const step = 2 ** (32 - prefix);
  const starts: [string, string][] = [
    ['10.200.0.0', '10.255.255.255'],
    ['192.168.200.0', '192.168.255.255'],
  ];
  for (const [a, b] of starts) {
    for (let n = parseIp(a)!; n + step - 1 <= parseIp(b)!; n += step)
      yield { base: n >>> 0, prefix };
  }
}

/** The first free /prefix subnet, or undefined. */
export function allocate(taken: Taken[], prefix = 24): Cidr | undefined {
  for (const c of candidates(prefix)) if (!firstOverlap(c, taken)) return c;
  return undefined;
}

/** The n-th host address of a subnet (1 = first usable). */
export function host(c: Cidr, n: number): number {
  return (c.base + n) >>> 0;
}

/** The netmask of a prefix as a dotted quad. */
export function netmask(prefix: number): string {
  return formatIp(mask(prefix));
}

/**
 * Address layout of a network: gateway first host, reservations from the
 * second host up to the middle, the dynamic DHCP range in the upper half.
 */
export function layout(c: Cidr): {
  gateway: string;
  reserved: [number, number];
  dynamic: [string, string];
} {
  if (c.prefix > 29)
    throw new UsageError(
      'net.subnet-too-small',
      `subnet ${formatCidr(c)} is too small: use /29 or larger`,
    );
  const n = size(c);
  const mid = Math.floor(n / 2);
  return {
    gateway: formatIp(host(c, 1)),
    reserved: [host(c, 2), host(c, mid - 1)],
    dynamic: [formatIp(host(c, mid)), formatIp(host(c, n - 2))],
  };
}
