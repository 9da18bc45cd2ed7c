/**
 * Parsing of VM options from the command line: sizes, CPU counts, port
 * forwards, names. Every problem is one UsageError quoting the value and
 * saying what was expected.
 */
import { crypto } from '../util/lazy.js';
import { UsageError } from '../errors.js';
import { checkName } from '../state/store.js';
import type { PortForward } from './types.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

/**
 * Parses a size like `512M`, `2G`, `1.5G`, `2GiB`, `4096K` into bytes.
 * A bare number means `bareUnit` (MiB for memory, as QEMU's -m does).
 */
export function parseSize(field: string, text: string, bareUnit: 'b' | 'm' = 'b'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)(?:i?b)?\s*$/i.exec(text);
  if (!m)
    throw new UsageError(
      'vm.bad-size',
      `${field} must be a size like 512M or 2G, got ${JSON.stringify(text)}`,
    );
  const unit = (m[2] ?? '').toLowerCase();
  const mult = unit === '' ? UNITS[bareUnit]! : UNITS[unit]!;
  const bytes = Math.round(Number(m[1]) * mult);
  if (!Number.isFinite(bytes) || bytes <= 0)
    throw new UsageError(
      'vm.bad-size',
      `${field} must be more than zero, got ${JSON.stringify(text)}`,
    );
  return bytes;
}

/** Memory in MiB from `--memory` (at least 64 MiB, whole MiB). */
export function parseMemoryMiB(text: string): number {
  const bytes = parseSize('--memory', text, 'm');
  const mib = Math.floor(bytes / 1024 ** 2);
  if (mib < 64)
    throw new UsageError(
      'vm.bad-memory',
      `--memory must be at least 64M, got ${JSON.stringify(text)}`,
    );
  return mib;
}

/** A CPU count from `--cpus` (1..255). */
export function parseCpus(text: string): number {
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1 || Number(text) > 255)
    throw new UsageError(
      'vm.bad-cpus',
      `--cpus must be a whole number from 1 to 255, got ${JSON.stringify(text)}`,
    );
  return Number(text);
}

/** A timeout in seconds (`--timeout 30`, `--wait-timeout 2.5`). */
export function parseSeconds(field: string, text: string): number {
  const n = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !Number.isFinite(n))
    throw new UsageError(
      'vm.bad-seconds',
      `${field} must be a number of seconds, got ${JSON.stringify(text)}`,
    );
  return n;
}

function port(field: string, text: string, spec: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 65535)
    throw new UsageError(
      'vm.bad-port',
      `${field} ${text ? `port ${JSON.stringify(text)}` : 'port'} in ${JSON.stringify(spec)} must be 1-65535`,
      'use --port HOST:GUEST[/udp], e.g. --port 2222:22 or --port 127.0.0.1:8053:53/udp',
    );
  return n;
}

/** Parses `--port [ADDR:]HOST:GUEST[/tcp|/udp]`; the host address defaults to 127.0.0.1. */
export function parsePort(spec: string): PortForward {
  const m = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?([^:/]*):([^:/]*)(?:\/(tcp|udp))?$/.exec(spec.trim());
  if (!m)
    throw new UsageError(
      'vm.bad-port',
      `--port must look like HOST:GUEST[/udp], got ${JSON.stringify(spec)}`,
      'e.g. --port 2222:22 or --port 0.0.0.0:8080:80 or --port 8053:53/udp',
    );
  const hostAddr = m[1] ?? '127.0.0.1';
  if (hostAddr.split('.').some((o) => Number(o) > 255))
    throw new UsageError(
      'vm.bad-port',
      `--port address ${JSON.stringify(hostAddr)} is not an IPv4 address`,
    );
  return {
    proto: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp',
    hostAddr,
    hostPort: port('host', m[2] ?? '', spec),
    guestPort: port('guest', m[3] ?? '', spec),
  };
}

/** Checks that no two forwards use the same host port and protocol. */
export function checkForwards(forwards: PortForward[]): void {
  const seen = new Set<string>();
  for (const f of forwards) {
    const k = `${f.proto}:${f.hostPort}`;
    if (seen.has(k))
      throw new UsageError('vm.bad-port', `host port ${f.hostPort}/${f.proto} is forwarded twice`);
    seen.add(k);
  }
}

/** Validates a VM name (letters, digits, '-', '_', '.'; no paths). */
export function checkVmName(name: string): string {
  return checkName('vm', name);
}

const ADJ = [
  'amber',
  'brisk',
  'calm',
  'deft',
  'eager',
  'fond',
  'keen',
  'lucid',
  'nimble',
  'quiet',
  'swift',
  'vivid',
];
const NOUN = [
  'otter',
  'finch',
  'heron',
  'lynx',
  'marten',
  'newt',
  'osprey',
  'puffin',
  'stoat',
  'wren',
  'ibis',
  'vole',
];

/** A generated VM name like `tiny-keen-otter-3f2a`. */
export function generateName(
  prefix: string,
  rnd: () => Buffer = () => crypto().randomBytes(4),
): string {
  const b = rnd();
  const p = /^[a-zA-Z][a-zA-Z0-9_.-]{0,30}$/.test(prefix) ? prefix : 'vm';
  return `${p}-${ADJ[b[0]! % ADJ.length]}-${NOUN[b[1]! % NOUN.length]}-${b.subarray(2, 4).toString('hex')}`;
}

/** Formats a byte count for people (MiB/GiB, one decimal). */
export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(1).replace(/\.0$/, '')}G`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1).replace(/\.0$/, '')}M`;
  return `${n}B`;
}
