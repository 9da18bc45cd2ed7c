/**
 * The active KVM probe. Node cannot ioctl /dev/kvm without a native addon,
 * so QEMU does it: (1) `-M none -accel kvm` with a monitor that answers
 * `info kvm`, which opens /dev/kvm, checks KVM_GET_API_VERSION (12) and
 * creates a VM; (2) a real guest: a 64 KiB firmware image nestvirt writes,
 * whose reset vector runs a few real-mode instructions (CPUID leaf 1 and
 * 0x80000001, to see whether the guest itself is offered VMX or SVM) and
 * writes the answer to QEMU's isa-debug-exit port, so QEMU exits with a
 * known code within milliseconds when the guest really runs. A KVM that
 * initialises but never runs that guest (a PVM host: only PVM guest kernels
 * run there) shows up as a timeout. The same image under `-accel tcg -cpu max`
 * proves the software fallback works and that its guests see SVM.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Runner, RunResult } from '../util/exec.js';
import { which } from '../util/exec.js';
import type { Arch } from './cpuinfo.js';

export interface ProbeResult {
  /** The probe was attempted (QEMU present, something to probe). */
  ran: boolean;
  /** It succeeded; null when it did not run. */
  ok: boolean | null;
  /** One line: what happened. */
  detail: string;
  /** Wall time in ms. */
  ms: number;
  /** The stage that decided: device check, QEMU's KVM init, or guest execution. */
  stage: 'device' | 'qemu' | 'init' | 'guest' | null;
  /** What the probe guest saw in CPUID (null when no guest ran). */
  guestSees: { vmx: boolean; svm: boolean } | null;
}

// isa-debug-exit: QEMU exits with (value << 1) | 1. The guest writes
// EXIT_BASE | vmx(1) | svm(2), so codes 65..71 mean "the guest ran".
const EXIT_PORT = 0xf4;
const EXIT_BASE = 0x20;
export const PROBE_EXIT_CODES = [0, 1, 2, 3].map((b) => ((EXIT_BASE | b) << 1) | 1);

/** The probe firmware: 64 KiB, code at 0xFF00, reset vector at 0xFFF0. */
export function probeFirmware(): Buffer {
  // prettier-ignore
  const code = [
    0x31, 0xff,                               // xor di, di
    0x66, 0xb8, 0x01, 0x00, 0x00, 0x00,       // mov eax, 1
    0x0f, 0xa2,                               // cpuid
    0x66, 0xf7, 0xc1, 0x20, 0x00, 0x00, 0x00, // test ecx, 1<<5   (VMX)
    0x74, 0x01, 0x47,                         // jz +1 ; inc di
    0x66, 0xb8, 0x01, 0x00, 0x00, 0x80,       // mov eax, 0x80000001
    0x0f, 0xa2,                               // cpuid
    0x66, 0xf7, 0xc1, 0x04, 0x00, 0x00, 0x00, // test ecx, 1<<2   (SVM)
    0x74, 0x02, 0x47, 0x47,                   // jz +2 ; inc di ; inc di
    0x89, 0xf8,                               // mov ax, di
    0x0c, EXIT_BASE,                          // or al, EXIT_BASE
    0xe6, EXIT_PORT,                          // out EXIT_PORT, al
    0xfa, 0xf4, 0xeb, 0xfd,                   // cli ; hlt ; jmp hlt
  ];
  const b = Buffer.alloc(0x10000, 0xf4); // hlt everywhere else
  Buffer.from(code).copy(b, 0xff00);
  // Reset vector F000:FFF0: near jmp to 0xFF00 (rel16 = 0xFF00 - 0xFFF3).
  Buffer.from([0xe9, 0x0d, 0xff]).copy(b, 0xfff0);
  return b;
}

/** Decodes QEMU's exit code from the probe guest. */
export function decodeProbeExit(code: number | null): { vmx: boolean; svm: boolean } | null {
  if (code === null) return null;
  const i = PROBE_EXIT_CODES.indexOf(code);
  if (i < 0) return null;
  return { vmx: (i & 1) !== 0, svm: (i & 2) !== 0 };
}

const QEMU_BIN: Record<Arch, string> = {
  x86_64: 'qemu-system-x86_64',
  aarch64: 'qemu-system-aarch64',
  ppc64le: 'qemu-system-ppc64',
  s390x: 'qemu-system-s390x',
};

export interface ProbeOptions {
  run: Runner;
  arch: Arch;
  env?: NodeJS.ProcessEnv;
  /** Guest-execution timeout (a hang means the guest does not run). */
  guestTimeoutMs?: number;
  /** Whether the KVM module is kvm_pvm (to name the hang). */
  pvm?: boolean;
}

function lastLine(r: RunResult): string {
  const l = (r.stderr.trim() || r.stdout.trim()).split('\n').filter((x) => !/warning:/.test(x));
  return (l[l.length - 1] ?? '').replace(/^qemu-system-\S+: /, '').trim();
}

async function withFirmware<T>(image: Buffer, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'nestvirt-probe-'));
  try {
    const p = join(dir, 'probe.bin');
    await writeFile(p, image);
    return await fn(p);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Boots a firmware image (default: the probe firmware) as a guest and
 * decodes what it reported. `timedOut` means the guest never reached the
 * exit port: it does not run.
 */
export async function runProbeGuest(o: {
  run: Runner;
  bin: string;
  accel: 'kvm' | 'tcg';
  cpu: string;
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
  firmware?: Buffer;
}): Promise<{ sees: { vmx: boolean; svm: boolean } | null; timedOut: boolean; result: RunResult }> {
  const result = await withFirmware(o.firmware ?? probeFirmware(), (fw) =>
    o.run(guestArgv(o.bin, fw, o.accel, o.cpu), {
      timeoutMs: o.timeoutMs,
      check: false,
      env: o.env,
    }),
  );
  return { sees: decodeProbeExit(result.code), timedOut: result.timedOut, result };
}

function guestArgv(bin: string, fw: string, accel: 'kvm' | 'tcg', cpu: string): string[] {
  return [
    bin,
    '-accel',
    accel,
    '-M',
    'pc',
    '-cpu',
    cpu,
    '-m',
    '16',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-bios',
    fw,
    '-device',
    `isa-debug-exit,iobase=0x${EXIT_PORT.toString(16)},iosize=0x04`,
  ];
}

/** Probes KVM with QEMU. Call only when /dev/kvm exists. */
export async function probeKvm(o: ProbeOptions): Promise<ProbeResult> {
  const t0 = performance.now();
  const ms = (): number => Math.round(performance.now() - t0);
  const bin = await which(QEMU_BIN[o.arch], o.env);
  if (!bin)
    return {
      ran: false,
      ok: null,
      detail: `${QEMU_BIN[o.arch]} is not installed: cannot probe KVM (apt-get install qemu-system)`,
      ms: ms(),
      stage: 'qemu',
      guestSees: null,
    };
  // Two questions: does KVM initialise (open, API version, KVM_CREATE_VM),
  // and does a standard guest really run? A guest that runs answers both,
  // so it goes first, alone: inside a TCG guest every QEMU start is most of
  // a second, and two side by side slowed each other. Only when it fails is
  // KVM's initialisation checked, to say which of the two failed.
  const timeout = o.guestTimeoutMs ?? 4000;
  const guest =
    o.arch === 'x86_64'
      ? await guestStage(o, bin, 'kvm', timeout, ms, (r) =>
          r.timedOut
            ? `KVM initialises (API version 12) but a standard guest did not run within ${timeout / 1000} s` +
              (o.pvm ? ' (a PVM host runs only PVM guest kernels)' : '')
            : `a standard guest failed under KVM: ${lastLine(r) || `exit ${r.code ?? r.signal}`}`,
        )
      : undefined;
  if (guest?.ok) return guest;
  const init = await o.run(
    [bin, '-accel', 'kvm', '-M', 'none', '-nodefaults', '-display', 'none', '-monitor', 'stdio'],
    {
      input: 'info kvm\nquit\n',
      timeoutMs: Math.max(10_000, o.guestTimeoutMs ?? 0),
      check: false,
      env: o.env,
    },
  );
  if (init.timedOut || init.code !== 0 || !/kvm support: enabled/.test(init.stdout)) {
    return {
      ran: true,
      ok: false,
      detail: init.timedOut
        ? 'QEMU did not finish initialising KVM in time'
        : `QEMU cannot use KVM: ${lastLine(init)}`,
      ms: ms(),
      stage: 'init',
      guestSees: null,
    };
  }
  if (!guest)
    return {
      ran: true,
      ok: true,
      detail: 'QEMU initialised KVM (API version 12, VM created)',
      ms: ms(),
      stage: 'init',
      guestSees: null,
    };
  return guest;
}

/**
 * Boots the probe guest (KVM with `-cpu host`, or TCG with `-cpu max`) and
 * turns its exit code into a ProbeResult; `failed` words the other outcome.
 */
async function guestStage(
  o: { run: Runner; env?: NodeJS.ProcessEnv },
  bin: string,
  accel: 'kvm' | 'tcg',
  timeoutMs: number,
  ms: () => number,
  failed: (r: RunResult) => string,
): Promise<ProbeResult> {
  const { result: r } = await runProbeGuest({
    run: o.run,
    bin,
    accel,
    cpu: accel === 'kvm' ? 'host' : 'max',
    timeoutMs,
    env: o.env,
  });
  const sees = decodeProbeExit(r.code);
  if (!sees)
    return { ran: true, ok: false, detail: failed(r), ms: ms(), stage: 'guest', guestSees: null };
  const ext =
    sees.svm && (accel === 'tcg' || !sees.vmx) ? 'SVM' : sees.vmx ? 'VMX' : 'neither VMX nor SVM';
  const how =
    accel === 'kvm' ? 'a standard guest ran under KVM' : 'a guest ran under TCG (-cpu max)';
  return {
    ran: true,
    ok: true,
    detail: `${how} in ${ms()} ms; it sees ${ext}`,
    ms: ms(),
    stage: 'guest',
    guestSees: sees,
  };
}

/** Runs the probe guest under TCG with `-cpu max`: the software fallback. */
export async function probeTcg(o: {
  run: Runner;
  arch: Arch;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}): Promise<ProbeResult> {
  const t0 = performance.now();
  const ms = (): number => Math.round(performance.now() - t0);
  if (o.arch !== 'x86_64')
    return {
      ran: false,
      ok: null,
      detail: `the TCG probe guest is x86 only (this is ${o.arch})`,
      ms: 0,
      stage: null,
      guestSees: null,
    };
  const bin = await which(QEMU_BIN.x86_64, o.env);
  if (!bin)
    return {
      ran: false,
      ok: null,
      detail: 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)',
      ms: ms(),
      stage: 'qemu',
      guestSees: null,
    };
  const timeout = o.timeoutMs ?? 15_000;
  return guestStage(o, bin, 'tcg', timeout, ms, (r) =>
    r.timedOut
      ? `the TCG guest did not finish within ${timeout / 1000} s`
      : `QEMU TCG failed: ${lastLine(r) || `exit ${r.code}`}`,
  );
}
