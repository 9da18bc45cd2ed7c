/**
 * The level contract between a nestvirt parent and its guests (DESIGN.md
 * "One tool at every level"). A VM started by nestvirt receives its chain
 * through QEMU fw_cfg (`-fw_cfg name=opt/org.nestvirt/chain,string=JSON`),
 * readable in the guest at
 *   /sys/firmware/qemu_fw_cfg/by_name/opt/org.nestvirt/chain/raw
 * (module qemu_fw_cfg), and as an SMBIOS type 11 OEM string
 * `org.nestvirt.chain=<base64url JSON>` (/sys/firmware/dmi/entries/11-0/raw,
 * module dmi-sysfs), so `nestvirt doctor` inside knows its exact level.
 */

export const FW_CFG_CHAIN_NAME = 'opt/org.nestvirt/chain';
export const FW_CFG_CHAIN_PATH = 'sys/firmware/qemu_fw_cfg/by_name/opt/org.nestvirt/chain/raw';
export const SMBIOS_CHAIN_PREFIX = 'org.nestvirt.chain=';

/** What runs a level. */
export type Runner = 'bare-metal' | 'kvm' | 'tcg' | 'pvm' | 'cloud' | 'hypervisor' | 'unknown';

export interface ChainHop {
  /** Absolute level when known, else null (then `relative` is set). */
  level: number | null;
  /** Level relative to the first nestvirt host in the chain (0 = that host). */
  relative: number;
  /** VM name (or host name for the first hop). */
  name: string;
  /** What runs this level: bare metal, a KVM guest, a TCG guest, ... */
  runner: Runner;
}

export interface ChainInfo {
  /** This guest's level, absolute when the parent knew its own, else null. */
  level: number | null;
  /** Level relative to the first nestvirt host in the chain. */
  relative: number;
  /** Hops from the first nestvirt host down to and including this guest. */
  chain: ChainHop[];
}

/** The chain a parent passes to a child VM it starts. */
export function childChain(parent: ChainInfo, childName: string, runner: Runner): ChainInfo {
  const level = parent.level === null ? null : parent.level + 1;
  const relative = parent.relative + 1;
  return {
    level,
    relative,
    chain: [...parent.chain, { level, relative, name: childName, runner }],
  };
}

export function encodeChain(c: ChainInfo): string {
  return JSON.stringify(c);
}

/** Parses a chain document; undefined when it is not one. */
export function parseChain(text: string): ChainInfo | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text.replace(/\0+$/, '').trim());
  } catch {
    return undefined;
  }
  const c = v as ChainInfo;
  if (!c || typeof c !== 'object' || !Array.isArray(c.chain) || typeof c.relative !== 'number')
    return undefined;
  if (c.level !== null && typeof c.level !== 'number') return undefined;
  return c;
}

/** Encodes the chain as an SMBIOS OEM string value. */
export function smbiosChainString(c: ChainInfo): string {
  return SMBIOS_CHAIN_PREFIX + Buffer.from(encodeChain(c)).toString('base64url');
}

/** Finds and decodes the chain in raw SMBIOS type 11 bytes. */
export function parseSmbiosOem(raw: Buffer): ChainInfo | undefined {
  for (const s of raw.toString('latin1').split('\0')) {
    const i = s.indexOf(SMBIOS_CHAIN_PREFIX);
    if (i >= 0)
      return parseChain(
        Buffer.from(s.slice(i + SMBIOS_CHAIN_PREFIX.length), 'base64url').toString('utf8'),
      );
  }
  return undefined;
}
