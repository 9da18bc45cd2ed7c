/**
 * The libvirt operations: list domains with their nesting verdict, nest a
 * domain (surgical XML edit + `virsh define`, recorded in the ledger), undo
 * it, and power-cycle a running domain so the change takes effect.
 */
import { join } from 'node:path';
import { readFile, rm } from 'node:fs/promises';
import { NotPossibleError, UsageError, NestvirtError, ExitCode } from '../errors.js';
import { Dirs } from '../state/paths.js';
import { writeAtomic } from '../state/store.js';
import { withLock } from '../state/lock.js';
import { readEntry, recordChanges, removeEntry } from '../state/ledger.js';
import { domainCpu, pickExtension, verdict } from './analyze.js';
import { nestXml, parseDomainXml, type NestEditResult } from './edit.js';
import { libvirtHost } from './host.js';
import { child, textContent } from './xml.js';
import type { Virsh } from './virsh.js';
import type {
  CpuMode,
  DomainCpu,
  DomainReport,
  Extension,
  LibvirtHost,
  LsReport,
} from './types.js';

/** State for libvirt domains lives in <root>/libvirt/<domain>/. */
export const LibvirtFiles = {
  dir: 'libvirt',
  /** The inactive XML nestvirt replaced, byte for byte as libvirt printed it. */
  original: 'original.xml',
  /** The edited XML nestvirt passed to `virsh define`. */
  edited: 'edited.xml',
  /** The inactive XML as libvirt saved it after the define (to spot later changes). */
  defined: 'defined.xml',
} as const;

/** The ledger owner for a domain's change. */
export function ledgerOwner(domain: string): string {
  return `libvirt:${domain}`;
}

export function domainDir(root: string, domain: string): string {
  return join(root, LibvirtFiles.dir, encodeURIComponent(domain));
}

/** Reads the host facts through libvirt's capabilities and the root tree. */
export async function probeHost(virsh: Virsh, root: string): Promise<LibvirtHost> {
  return libvirtHost(await virsh.capabilities(), virsh.uri, root);
}

/** Reports one domain. */
export async function reportDomain(
  virsh: Virsh,
  host: LibvirtHost,
  name: string,
  stateRoot: string | undefined,
): Promise<DomainReport> {
  const [state, inactive] = await Promise.all([virsh.state(name), virsh.dumpxml(name, true)]);
  const running = state !== 'shut off' && state !== 'crashed';
  const live = running ? await virsh.dumpxml(name, false) : inactive;
  const doc = parseDomainXml(inactive, `the XML of domain ${name}`);
  const uuidEl = child(doc.root, 'uuid');
  const base = domainCpu(inactive, null);
  const ext = pickExtension(base.type, base.arch, host);
  const cfg = domainCpu(inactive, ext);
  const now = domainCpu(live, ext);
  const vCfg = verdict(name, cfg, ext, host);
  const vNow = verdict(name, now, ext, host);
  const needsPowerCycle = running && vNow.configured !== vCfg.configured;
  let reason = running ? vNow.reason : vCfg.reason;
  if (needsPowerCycle)
    reason = vCfg.configured
      ? 'nests once power-cycled: the guest started before the change (shut it down and start it; a reboot inside the guest is not enough)'
      : `still nests until its next full power cycle; the saved configuration does not: ${vCfg.reason}`;
  let nestedByNestvirt = false;
  if (stateRoot) nestedByNestvirt = (await readEntry(stateRoot, ledgerOwner(name))) !== undefined;
  return {
    name,
    uuid: uuidEl ? textContent(doc, uuidEl).trim() : null,
    state,
    type: cfg.type,
    arch: cfg.arch,
    extension: ext,
    cpu: { mode: cfg.mode, model: cfg.model, policy: cfg.policy, nestedHv: cfg.nestedHv },
    canNest: running ? vNow.canNest : vCfg.canNest,
    needsPowerCycle,
    configured: vCfg.configured,
    nestedByNestvirt,
    reason,
  };
}

/** `nestvirt libvirt ls`: every domain with its verdict. */
export async function listDomains(
  virsh: Virsh,
  opts: { root?: string; stateRoot?: string } = {},
): Promise<LsReport> {
  const host = await probeHost(virsh, opts.root ?? '/');
  const names = await virsh.names();
  const domains: DomainReport[] = [];
  for (const n of names) {
    try {
      domains.push(await reportDomain(virsh, host, n, opts.stateRoot));
    } catch (e) {
      // A domain undefined between `list` and `dumpxml` is simply gone.
      if (e instanceof NestvirtError && e.code === 'libvirt.unknown-domain') continue;
      throw e;
    }
  }
  return { uri: virsh.uri, host, domains };
}

export interface NestOptions {
  mode?: CpuMode;
  model?: string;
  dryRun?: boolean;
}

export interface NestResult {
  domain: string;
  uri: string;
  extension: string;
  /** False when the domain already nested: nothing was defined. */
  changed: boolean;
  applied: boolean;
  before: string;
  after: string;
  notes: string[];
  state: string;
  /** The domain is running and must be shut down and started for the change to apply. */
  needsPowerCycle: boolean;
  host: LibvirtHost;
  /** Warnings about the host (nested parameter off, ...). */
  warnings: string[];
  /** Where the replaced XML was saved (when applied). */
  originalPath: string | null;
}

/**
 * Pure: picks the extension for a domain on a host and computes the edit;
 * throws the one-line errors for what cannot nest.
 */
export function planNest(
  name: string,
  before: string,
  host: LibvirtHost,
  opts: NestOptions,
): { base: DomainCpu; ext: Exclude<Extension, 'sie'>; edit: NestEditResult } {
  const base = domainCpu(before, null);
  const ext = pickExtension(base.type, base.arch, host);
  if (!ext)
    throw new NotPossibleError(
      'libvirt.no-extension',
      `cannot nest domain ${name}: ${verdict(name, base, null, host).reason}`,
      'run `nestvirt doctor` to see what this host offers',
    );
  if (ext === 'sie')
    throw new NotPossibleError(
      'libvirt.unsupported-arch',
      `nesting s390x domains is not supported by nestvirt yet (domain ${name})`,
      "use <cpu mode='host-model'/> and load kvm with nested=1 (`nestvirt enable`)",
    );
  if (base.type === 'qemu' && opts.mode === 'host-passthrough')
    throw new UsageError(
      'libvirt.bad-mode',
      `domain ${name} is type 'qemu' (TCG): host-passthrough needs KVM`,
      "use --mode maximum (QEMU's -cpu max) or --mode custom --model EPYC",
    );
  if (ext === 'vmx' && base.type === 'qemu')
    throw new NotPossibleError(
      'libvirt.tcg-vmx',
      `domain ${name} is TCG (type 'qemu'), which cannot emulate vmx`,
      'use an AMD model (svm) or a KVM domain',
    );
  const edit = nestXml(before, {
    extension: ext,
    ...(opts.mode ? { mode: opts.mode } : {}),
    ...(opts.model ? { model: opts.model } : {}),
    defaultMode: base.type === 'qemu' ? 'maximum' : 'host-passthrough',
  });
  return { base, ext, edit };
}

/** Computes (and unless dryRun, applies) the nesting edit of one domain. */
export async function nestDomain(
  virsh: Virsh,
  name: string,
  stateRoot: string,
  opts: NestOptions & { root?: string },
): Promise<NestResult> {
  const host = await probeHost(virsh, opts.root ?? '/');
  const before = await virsh.dumpxml(name, true);
  const state = await virsh.state(name);
  const { base, ext, edit } = planNest(name, before, host, opts);
  const warnings: string[] = [];
  if (base.type !== 'qemu') {
    if (host.nested === false)
      warnings.push(
        `the host's ${host.module} has nested=0, so no guest can nest yet: run \`nestvirt enable\``,
      );
    else if (host.nested === null && host.local)
      warnings.push(
        `the host's ${host.module ?? 'KVM module'} is not loaded (no nested parameter): run \`nestvirt doctor\``,
      );
  }
  const running = state !== 'shut off' && state !== 'crashed';
  const result: NestResult = {
    domain: name,
    uri: virsh.uri,
    extension: ext,
    changed: edit.changed,
    applied: false,
    before,
    after: edit.text,
    notes: edit.notes,
    state,
    needsPowerCycle: false,
    host,
    warnings,
    originalPath: null,
  };
  if (running) {
    const live = await virsh.dumpxml(name, false);
    result.needsPowerCycle = !verdict(name, domainCpu(live, ext), ext, host).configured;
  }
  if (!edit.changed || opts.dryRun) return result;
  const dir = domainDir(stateRoot, name);
  await withLock(
    join(stateRoot, Dirs.locks, `libvirt-${encodeURIComponent(name)}.lock`),
    `libvirt domain ${name}`,
    async () => {
      const entry = await readEntry(stateRoot, ledgerOwner(name));
      const originalPath = join(dir, LibvirtFiles.original);
      // Nesting twice keeps the first original, so unnest returns to what was there
      // before nestvirt; but when someone changed the domain since nestvirt defined
      // it, their version is what this edit replaces, and what unnest must restore.
      const definedBefore = entry
        ? await readFile(join(dir, LibvirtFiles.defined), 'utf8').catch(() => undefined)
        : undefined;
      if (!entry || definedBefore !== before) await writeAtomic(originalPath, before);
      const editedPath = join(dir, LibvirtFiles.edited);
      await writeAtomic(editedPath, edit.text);
      try {
        await virsh.define(editedPath);
      } catch (e) {
        // libvirt refused the edit: the domain is unchanged, so leave no state behind.
        if (!entry) await rm(dir, { recursive: true, force: true });
        throw e;
      }
      const defined = await virsh.dumpxml(name, true);
      await writeAtomic(join(dir, LibvirtFiles.defined), defined);
      if (!entry)
        await recordChanges(stateRoot, ledgerOwner(name), [
          {
            kind: 'libvirt-define',
            uri: virsh.uri,
            domain: name,
            uuid: uuidOf(before),
            original: originalPath,
            defined: join(dir, LibvirtFiles.defined),
          },
        ]);
      result.applied = true;
      result.originalPath = originalPath;
    },
  );
  if (running) {
    const live = await virsh.dumpxml(name, false);
    result.needsPowerCycle = !verdict(name, domainCpu(live, ext), ext, host).configured;
  }
  return result;
}

function uuidOf(xml: string): string | null {
  const doc = parseDomainXml(xml);
  const u = child(doc.root, 'uuid');
  return u ? textContent(doc, u).trim() : null;
}

export interface UnnestResult {
  domain: string;
  uri: string;
  /** True when the original XML was defined again. */
  restored: boolean;
  /** Current inactive XML → the original. */
  before: string;
  after: string;
  /** Non-empty when someone changed the domain after nestvirt did (current vs what nestvirt defined). */
  changedSince: string;
  forced: boolean;
  state: string;
  needsPowerCycle: boolean;
}

/** Restores the XML `nest` replaced; refuses when the domain changed since, unless forced. */
export async function unnestDomain(
  virsh: Virsh,
  name: string,
  stateRoot: string,
  opts: {
    force?: boolean;
    dryRun?: boolean;
    root?: string;
    diff: (a: string, b: string, labels: [string, string]) => string;
  },
): Promise<UnnestResult> {
  const entry = await readEntry(stateRoot, ledgerOwner(name));
  if (!entry)
    throw new UsageError(
      'libvirt.not-nested',
      `nestvirt has not changed domain ${name} (no ledger entry ${ledgerOwner(name)})`,
      `see \`nestvirt libvirt ls\`; only domains changed by \`nestvirt libvirt nest\` can be restored`,
    );
  const change = entry.changes.find((c) => c.kind === 'libvirt-define');
  const dir = domainDir(stateRoot, name);
  const originalPath = (change?.original as string | undefined) ?? join(dir, LibvirtFiles.original);
  const definedPath = (change?.defined as string | undefined) ?? join(dir, LibvirtFiles.defined);
  let original: string;
  let defined: string;
  try {
    original = await readFile(originalPath, 'utf8');
    defined = await readFile(definedPath, 'utf8');
  } catch (e) {
    throw new NotPossibleError(
      'libvirt.state-missing',
      `the saved XML of domain ${name} is missing (${(e as Error).message})`,
      `remove the ledger entry ${join(stateRoot, Dirs.ledger)} by hand after checking the domain with \`virsh edit ${name}\``,
      e,
    );
  }
  parseDomainXml(original, `the saved original XML of ${name} (${originalPath})`);
  const current = await virsh.dumpxml(name, true);
  const state = await virsh.state(name);
  const changedSince =
    current === defined
      ? ''
      : opts.diff(defined, current, [`${name} as nestvirt defined it`, `${name} now`]);
  if (changedSince && !opts.force)
    throw Object.assign(
      new NestvirtError(
        'libvirt.changed-since',
        `domain ${name} was changed after nestvirt nested it; restoring would undo those changes too`,
        {
          hint: `review the differences, then run \`nestvirt libvirt unnest ${name} --force\` (or edit it with \`virsh edit ${name}\`)`,
          exitCode: ExitCode.NOT_POSSIBLE,
        },
      ),
      { changedSince },
    );
  const result: UnnestResult = {
    domain: name,
    uri: virsh.uri,
    restored: false,
    before: current,
    after: original,
    changedSince,
    forced: !!changedSince && !!opts.force,
    state,
    needsPowerCycle: false,
  };
  if (opts.dryRun) return result;
  await withLock(
    join(stateRoot, Dirs.locks, `libvirt-${encodeURIComponent(name)}.lock`),
    `libvirt domain ${name}`,
    async () => {
      if (current !== original) await virsh.define(originalPath);
      await removeEntry(stateRoot, ledgerOwner(name));
      await rm(dir, { recursive: true, force: true });
    },
  );
  result.restored = true;
  const running = state !== 'shut off' && state !== 'crashed';
  if (running) {
    const host = await probeHost(virsh, opts.root ?? '/');
    const base = domainCpu(original, null);
    const ext = pickExtension(base.type, base.arch, host);
    const live = await virsh.dumpxml(name, false);
    result.needsPowerCycle =
      verdict(name, domainCpu(live, ext), ext, host).configured !==
      verdict(name, domainCpu(original, ext), ext, host).configured;
  }
  return result;
}

/** Shuts a domain down (ACPI), waits up to timeoutS, destroys it if still up, then starts it. */
export async function powerCycle(
  virsh: Virsh,
  name: string,
  timeoutS: number,
  step: (title: string, fn: () => Promise<void>) => Promise<void>,
): Promise<{ forced: boolean }> {
  let forced = false;
  await step(`shutting down ${name} (up to ${timeoutS} s)`, async () => {
    await virsh.call(['shutdown', '--', name], { domain: name }).catch((e: unknown) => {
      // Already off between our check and the shutdown: fine.
      if (!(e instanceof NestvirtError && /not running/i.test(e.message))) throw e;
    });
    const deadline = Date.now() + timeoutS * 1000;
    while (Date.now() < deadline) {
      if ((await virsh.state(name)) === 'shut off') return;
      await new Promise((r) => setTimeout(r, 500));
    }
    forced = true;
    await virsh.call(['destroy', '--', name], { domain: name }).catch((e: unknown) => {
      if (!(e instanceof NestvirtError && /not running/i.test(e.message))) throw e;
    });
  });
  await step(`starting ${name}`, async () => {
    await virsh.call(['start', '--', name], { domain: name });
  });
  return { forced };
}

/** What `nestvirt doctor` shows about libvirt (see libvirtSummary in index.ts). */
export interface LibvirtSummary {
  /** virsh is installed. */
  present: boolean;
  uri: string;
  /** libvirtd answered at `uri`. */
  reachable: boolean;
  /** Why not reachable (one line), when present but not reachable. */
  error?: string;
  /** The fix for `error`, when there is one. */
  fix?: string;
  domains: { name: string; canNest: boolean; needsPowerCycle: boolean; reason: string }[];
}
