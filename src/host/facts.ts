/**
 * Gathers everything doctor knows about a machine into one plain value,
 * `HostFacts`, from this machine (root '/') or from a captured tree. The
 * verdict is then a pure function of these facts (verdict.ts).
 */
import { trace } from '../util/trace.js';
import { access, constants, stat } from 'node:fs/promises';
import { openSync, readSync, closeSync, constants as fsc } from 'node:fs';
import { userInfo } from 'node:os';
import { HostRoot } from './root.js';
import {
  cpuExtension,
  parseCpuinfo,
  secondLevelPaging,
  type Arch,
  type Extension,
  type SecondLevelPaging,
} from './cpuinfo.js';
import { detectMachine, DMI_FIELDS, type Dmi, type MachineFacts } from './machine.js';
import { readKvmModules, type KvmModule, type KvmModuleName } from './modules.js';
import { probeKvm, probeTcg, type ProbeResult } from './probe.js';
import { FW_CFG_CHAIN_PATH, parseChain, parseSmbiosOem, type ChainInfo } from './chain.js';
import type { Runner } from '../util/exec.js';
import { UsageError } from '../errors.js';

export const DOCTOR_SCHEMA_VERSION = 1;

export interface KvmAccess {
  /** The invoking user's name and uid. */
  user: string;
  uid: number;
  readable: boolean;
  writable: boolean;
  /** /dev/kvm's group name (usually "kvm") and mode, e.g. "0660". */
  group: string | null;
  mode: string;
  /** The user is in that group (in this process's groups). */
  inGroup: boolean;
}

export interface HostFacts {
  schemaVersion: 1;
  /** Where the facts came from. */
  source: { root: string; live: boolean; kernel: string | null };
  /** 0 bare metal, 1 a VM, N from a nestvirt parent's chain; null if unknown. */
  level: number | null;
  /** True when the level is known exactly (bare metal, or a chain with an absolute level). */
  levelExact: boolean;
  levelSource: 'chain' | 'detected' | 'unknown';
  cpu: {
    arch: Arch;
    vendor: string;
    model: string | null;
    count: number;
    extensions: Extension | null;
    secondLevelPaging: SecondLevelPaging | null;
  };
  machine: MachineFacts;
  /** The chain a nestvirt parent passed (fw_cfg or SMBIOS type 11), or null. */
  chain: (ChainInfo & { source: 'fw_cfg' | 'smbios' }) | null;
  kvm: {
    /** /dev/kvm exists. */
    device: boolean;
    /** Access for the invoking user; null when not known (--root). */
    access: KvmAccess | null;
    /** The module that provides (or would provide) /dev/kvm; null if none is loaded. */
    module: KvmModuleName | null;
    /** That module's `nested` parameter; null if it has none or none is loaded. */
    nested: boolean | null;
    modules: KvmModule[];
    /** kvm_pvm said "this kernel is itself a kvm-pvm guest; not binding". */
    pvmNotBinding: boolean;
    /** The kernel said KVM is disabled by the firmware (BIOS). */
    disabledByFirmware: boolean;
    /** The active probe; null with --root. */
    probe: ProbeResult | null;
  };
  /** QEMU TCG with -cpu max, the software fallback; probe null with --root. */
  tcg: { probe: ProbeResult | null };
  kernel: {
    /** Kernel messages doctor used (matched lines only). */
    messages: string[];
    messagesSource: string | null;
    cmdline: string | null;
  };
}

export interface GatherOptions {
  /** Directory laid out like / (default '/': this machine). */
  root?: string;
  run: Runner;
  env?: NodeJS.ProcessEnv;
  /** Run the active probes (default: only when root is '/'). */
  probe?: boolean;
  /** Timeout for the KVM guest probe (ms). */
  guestTimeoutMs?: number;
  /** Called when a slow step starts (for progress). */
  onStep?: (title: string) => void;
}

// Kernel message lines that matter for virtualization.
const KMSG_RE =
  /Hypervisor detected|Booting paravirtualized kernel|kvm-pvm|\bkvm: |kvm_(intel|amd|hv|pr)|\b(SVM|VMX|kvm-s390|kvm-hv)[: ]|[Nn]ested [Vv]irtualization|[Nn]ested [Pp]aging|disabled by bios|Xen version|Hyper-V: /;

/** Reads kernel messages: /dev/kmsg, else dmesg, else kern.log (live), or the captured copy. */
export async function readKernelMessages(
  root: HostRoot,
  run: Runner,
): Promise<{ lines: string[]; source: string | null }> {
  const keep = (t: string): string[] =>
    t
      .split('\n')
      .map((l) => l.trimEnd())
      .filter(
        (l) => l && KMSG_RE.test(l) && !/Command line:|Kernel command line:|kvm-clock/.test(l),
      );
  if (!root.live) {
    for (const p of ['nestvirt/dmesg.txt', 'var/log/dmesg', 'var/log/kern.log']) {
      const t = root.text(p);
      if (t !== undefined) return { lines: keep(t), source: p };
    }
    return { lines: [], source: null };
  }
  // /dev/kmsg first: the same records dmesg prints, without starting a
  // program (~0.2 s inside a TCG guest). Where it cannot be opened
  // (dmesg_restrict for a non-root user), dmesg says so the same way.
  const km = readKmsgNonBlocking(root.path('dev/kmsg'));
  if (km) return { lines: keep(km), source: '/dev/kmsg' };
  try {
    const r = await run(['dmesg'], { check: false, timeoutMs: 5000 });
    if (r.code === 0 && r.stdout.trim()) return { lines: keep(r.stdout), source: 'dmesg' };
  } catch {
    /* dmesg missing: try the files */
  }
  const kl = root.text('var/log/kern.log');
  if (kl !== undefined) return { lines: keep(kl), source: '/var/log/kern.log' };
  return { lines: [], source: null };
}

/** Reads the kernel ring buffer from /dev/kmsg without blocking at its end. */
function readKmsgNonBlocking(path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
  } catch {
    return undefined;
  }
  const parts: string[] = [];
  const buf = Buffer.alloc(8192);
  try {
    for (let i = 0; i < 100_000; i++) {
      let n: number;
      try {
        n = readSync(fd, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // overwritten records: keep reading
        break; // EAGAIN: end of the buffer
      }
      if (n <= 0) break;
      // "prio,seq,usec,flags;message"
      const rec = buf.subarray(0, n).toString('utf8');
      const semi = rec.indexOf(';');
      parts.push(semi >= 0 ? rec.slice(semi + 1).split('\n')[0]! : rec);
    }
  } finally {
    closeSync(fd);
  }
  return parts.join('\n');
}

function readDmi(root: HostRoot): Dmi {
  const d = {} as Record<keyof Dmi, string | null>;
  for (const f of DMI_FIELDS) d[f] = root.line(`sys/class/dmi/id/${f}`) ?? null;
  return d as Dmi;
}

function readChain(root: HostRoot): HostFacts['chain'] {
  const fw = root.text(FW_CFG_CHAIN_PATH);
  if (fw !== undefined) {
    const c = parseChain(fw);
    if (c) return { ...c, source: 'fw_cfg' };
  }
  for (const e of root.list('sys/firmware/dmi/entries').filter((n) => n.startsWith('11-'))) {
    const raw = root.bytes(`sys/firmware/dmi/entries/${e}/raw`);
    const c = raw && parseSmbiosOem(raw);
    if (c) return { ...c, source: 'smbios' };
  }
  return null;
}

/** Picks the module that provides /dev/kvm for this CPU. */
export function primaryModule(
  arch: Arch,
  vendor: string,
  mods: KvmModule[],
): KvmModule | undefined {
  const loaded = (n: KvmModuleName): KvmModule | undefined =>
    mods.find((m) => m.name === n && m.loaded);
  switch (arch) {
    case 'x86_64':
      return (
        (vendor === 'intel' ? loaded('kvm_intel') : undefined) ??
        (vendor === 'amd' || vendor === 'hygon' ? loaded('kvm_amd') : undefined) ??
        loaded('kvm_intel') ??
        loaded('kvm_amd') ??
        loaded('kvm_pvm')
      );
    case 'ppc64le':
      return loaded('kvm_hv') ?? loaded('kvm_pr');
    default:
      return loaded('kvm');
  }
}

async function kvmAccess(root: HostRoot, env: NodeJS.ProcessEnv): Promise<KvmAccess | null> {
  if (!root.live) return null;
  const p = root.path('dev/kvm');
  let st;
  try {
    st = await stat(p);
  } catch {
    return null;
  }
  const ok = async (mode: number): Promise<boolean> => {
    try {
      await access(p, mode);
      return true;
    } catch {
      return false;
    }
  };
  let group: string | null = null;
  for (const l of (root.text('etc/group') ?? '').split('\n')) {
    const [name, , gid] = l.split(':');
    if (gid !== undefined && Number(gid) === st.gid) group = name ?? null;
  }
  const groups = process.getgroups?.() ?? [];
  const uid = process.getuid?.() ?? -1;
  let user = env.USER ?? '';
  try {
    user = userInfo().username;
  } catch {
    /* no passwd entry */
  }
  return {
    user,
    uid,
    readable: await ok(constants.R_OK),
    writable: await ok(constants.W_OK),
    group,
    mode: '0' + (st.mode & 0o777).toString(8),
    inGroup: groups.includes(st.gid) || process.getgid?.() === st.gid,
  };
}

/** Gathers the facts; throws a UsageError when the root holds no usable cpuinfo. */
export async function gatherFacts(opts: GatherOptions): Promise<HostFacts> {
  const root = new HostRoot(opts.root ?? '/');
  const env = opts.env ?? process.env;
  const where = root.live ? '/proc/cpuinfo' : `${root.path('proc/cpuinfo')}`;
  const text = root.text('proc/cpuinfo');
  if (text === undefined)
    throw new UsageError(
      'doctor.no-cpuinfo',
      `cannot read ${where}: ${root.live ? 'is /proc mounted?' : 'not a captured tree (expected DIR/proc/cpuinfo)'}`,
      root.live
        ? 'mount proc on /proc'
        : 'point --root at a directory laid out like / (an unpacked `nestvirt doctor --capture` tarball)',
    );
  const cpu = parseCpuinfo(text);
  if (!cpu)
    throw new UsageError(
      'doctor.bad-cpuinfo',
      `${where} has no recognisable CPU description (no vendor_id/flags, cpu/platform, or Features lines)`,
      'capture /proc/cpuinfo from the machine itself (`nestvirt doctor --capture FILE` there)',
    );
  const kmsg = await readKernelMessages(root, opts.run);
  trace('doctor: kernel messages read');
  const detected = detectMachine({
    cpu,
    dmi: readDmi(root),
    sysHypervisor: {
      type: root.line('sys/hypervisor/type') ?? null,
      uuid: root.line('sys/hypervisor/uuid') ?? null,
    },
    sysinfo: root.text('proc/sysinfo') ?? null,
    kmsg: kmsg.lines,
  });
  const chain = readChain(root);
  const modules = readKvmModules(root);
  const primary = primaryModule(cpu.arch, cpu.vendor, modules);
  const device = root.exists('dev/kvm');
  const pvmNotBinding = kmsg.lines.some((l) => /kvm-pvm: .*not binding/.test(l));
  // The kernel's lines that name PVM leave the ring buffer on a long-running
  // machine. What stays: kvm_pvm is there, yet this VM has no /dev/kvm and no
  // VT-x/AMD-V. kvm_pvm exists to give a VM /dev/kvm; it holds back when the
  // kernel is itself a PVM guest.
  const machine =
    (detected.hypervisor === null || detected.hypervisor === 'unknown') &&
    detected.virtual === true &&
    primary?.name === 'kvm_pvm' &&
    !device &&
    cpuExtension(cpu) === null
      ? {
          ...detected,
          hypervisor: 'pvm' as const,
          evidence: [
            ...detected.evidence,
            'inferred: kvm_pvm is present but this VM has no /dev/kvm and no VT-x/AMD-V, as in a PVM guest',
          ],
        }
      : detected;
  const disabledByFirmware = kmsg.lines.some((l) =>
    /disabled by bios|VMX not enabled|SVM disabled \(by BIOS\)/i.test(l),
  );
  let level: number | null;
  let levelExact: boolean;
  let levelSource: HostFacts['levelSource'];
  if (chain) {
    level = chain.level;
    levelExact = chain.level !== null;
    levelSource = 'chain';
  } else if (machine.virtual !== null) {
    level = machine.virtual ? 1 : 0;
    levelExact = !machine.virtual;
    levelSource = 'detected';
  } else {
    level = null;
    levelExact = false;
    levelSource = 'unknown';
  }
  const release = root.live
    ? (root.line('proc/sys/kernel/osrelease') ?? null)
    : (root.line('nestvirt/uname.txt')?.split(' ')[2] ??
      root.line('proc/version')?.split(' ')[2] ??
      null);

  trace('doctor: facts read');
  const doProbe = opts.probe ?? root.live;
  let kvmProbe: ProbeResult | null = null;
  let tcgProbe: ProbeResult | null = null;
  if (doProbe) {
    if (device) {
      opts.onStep?.('probing KVM with a tiny guest');
      kvmProbe = await probeKvm({
        run: opts.run,
        arch: cpu.arch,
        env,
        pvm: primary?.name === 'kvm_pvm',
        // NESTVIRT_PROBE_TIMEOUT_MS: for slow machines (a KVM guest nested in a TCG guest).
        ...(opts.guestTimeoutMs || Number(env.NESTVIRT_PROBE_TIMEOUT_MS) > 0
          ? { guestTimeoutMs: opts.guestTimeoutMs || Number(env.NESTVIRT_PROBE_TIMEOUT_MS) }
          : {}),
      });
    } else
      kvmProbe = {
        ran: false,
        ok: false,
        detail: 'no /dev/kvm: nothing to probe',
        ms: 0,
        stage: 'device',
        guestSees: null,
      };
    // The TCG probe checks the fallback, which only matters when KVM cannot
    // run guests here. Inside a TCG guest it is TCG within TCG, seconds of
    // work that would slow down the nested chain for nothing.
    if (kvmProbe.ok)
      tcgProbe = {
        ran: false,
        ok: null,
        detail: 'not needed: KVM runs guests here',
        ms: 0,
        stage: null,
        guestSees: null,
      };
    else {
      opts.onStep?.('probing QEMU TCG (-cpu max)');
      tcgProbe = await probeTcg({
        run: opts.run,
        arch: cpu.arch,
        env,
        ...(Number(env.NESTVIRT_PROBE_TIMEOUT_MS) > 0
          ? { timeoutMs: Math.max(15_000, Number(env.NESTVIRT_PROBE_TIMEOUT_MS)) }
          : {}),
      });
    }
  }

  trace('doctor: probes done');
  return {
    schemaVersion: DOCTOR_SCHEMA_VERSION,
    source: { root: root.dir, live: root.live, kernel: release },
    level,
    levelExact,
    levelSource,
    cpu: {
      arch: cpu.arch,
      vendor: cpu.vendor,
      model: cpu.model,
      count: cpu.count,
      extensions:
        cpuExtension(cpu) ??
        (cpu.arch === 'ppc64le' && primary?.name === 'kvm_hv' && device ? 'power-hv' : null),
      secondLevelPaging: secondLevelPaging(cpu),
    },
    machine,
    chain,
    kvm: {
      device,
      access: device ? await kvmAccess(root, env) : null,
      module: primary?.name ?? null,
      nested: primary?.nested ?? null,
      modules,
      pvmNotBinding,
      disabledByFirmware,
      probe: kvmProbe,
    },
    tcg: { probe: tcgProbe },
    kernel: {
      messages: kmsg.lines,
      messagesSource: kmsg.source,
      cmdline: root.line('proc/cmdline') ?? null,
    },
  };
}
