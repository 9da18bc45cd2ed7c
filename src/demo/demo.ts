/**
 * `nestvirt demo`: the whole chain. Checks this machine, builds the
 * built-in images, starts a VM with nesting exposed from the `hypervisor`
 * image, runs nestvirt inside it (doctor, then `nestvirt run` of an inner
 * VM under KVM), runs a process in the inner VM that reports its own level
 * and accelerator, prints the chain and cleans up.
 *
 * Every VM is started through the public CLI (`nestvirt run`, and inside
 * L1 `nestvirt exec L1 -- nestvirt run`), the same code path as a person's.
 */
import { crypto } from '../util/lazy.js';
import type { Runner as ChainRunner } from '../host/chain.js';
import { planChain, type ChainPlan, type DoctorReport } from './plan.js';
import { WHOAMI_SCRIPT, parseWhoami, type Whoami } from './whoami.js';
import { NestvirtError, ExitCode } from '../errors.js';

/** Runs the nestvirt CLI (this same build) and returns its result. */
export type SelfRunner = (
  argv: string[],
  opts?: { timeoutMs?: number; onStderrLine?: (line: string) => void },
) => Promise<{ code: number; stdout: string; stderr: string }>;

export interface DemoOptions {
  nested: boolean;
  keep: boolean;
  /** Memory and CPUs of the outer VM. */
  memory: string;
  cpus: number;
  /** Overall timeout per VM step, ms. */
  stepTimeoutMs: number;
  namePrefix?: string;
}

export interface ChainLevel {
  /** Absolute level when known, else null. */
  level: number | null;
  /** Level relative to this host (0 = this host). */
  relative: number;
  name: string;
  role: 'host' | 'outer' | 'inner';
  /** What runs this level. */
  runner: ChainRunner;
  /** Accelerator of this level's vCPUs (null for the host). */
  accel: 'kvm' | 'tcg' | null;
  /** Time from `run` to the guest agent answering, ms. */
  readyMs: number | null;
}

export interface DemoStep {
  id: 'doctor' | 'images' | 'outer' | 'outer-doctor' | 'inner' | 'process' | 'cleanup';
  title: string;
  ok: boolean;
  ms: number;
  error?: {
    level: number | null;
    relative: number;
    message: string;
    fix?: string;
    console?: string[];
  };
}

export interface DemoResult {
  schemaVersion: 1;
  ok: boolean;
  summary: string;
  chain: ChainLevel[];
  steps: DemoStep[];
  innermost: (Whoami & { level: number | null; relative: number }) | null;
  /** From the start of the demo to the innermost process's report, ms. */
  toInnermostMs: number | null;
  totalMs: number;
  kept: boolean;
}

interface ExecJson {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface DemoHooks {
  step<T>(title: string, fn: (update: (detail: string) => void) => Promise<T>): Promise<T>;
}

class StepFailure extends Error {
  constructor(
    readonly relative: number,
    message: string,
    readonly fix?: string,
    readonly consoleLines?: string[],
  ) {
    super(message);
  }
}

function parseJson<T>(what: string, text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`${what} did not print JSON: ${text.trim().split('\n').slice(-3).join(' | ')}`);
  }
}

function lastError(r: { stderr: string; stdout: string }): string {
  const lines = (r.stderr || r.stdout).trim().split('\n').filter(Boolean);
  const msg = lines.find((l) => l.startsWith('nestvirt:')) ?? lines[lines.length - 1] ?? '';
  return msg.replace(/^nestvirt:\s*/, '');
}
function lastFix(r: { stderr: string }): string | undefined {
  const m = /^\s*fix:\s*(.*)$/m.exec(r.stderr);
  return m?.[1];
}

/** Runs the demo. Never throws for a failed step: the result says which failed. */
export async function runDemo(
  self: SelfRunner,
  hooks: DemoHooks,
  opts: DemoOptions,
): Promise<DemoResult> {
  const t0 = performance.now();
  const id = opts.namePrefix ?? `demo-${crypto().randomBytes(3).toString('hex')}`;
  const outerName = `${id}-l1`;
  const innerName = `${id}-l2`;
  const steps: DemoStep[] = [];
  const chain: ChainLevel[] = [];
  let innermost: DemoResult['innermost'] = null;
  let toInnermostMs: number | null = null;
  let plan: ChainPlan | undefined;
  let hostLevel: number | null = null;
  let outerStarted = false;
  let summary = '';

  const abs = (rel: number): number | null => (hostLevel === null ? null : hostLevel + rel);

  async function step<T>(
    sid: DemoStep['id'],
    title: string,
    relative: number,
    fn: (u: (d: string) => void) => Promise<T>,
  ): Promise<T> {
    const s0 = performance.now();
    try {
      const v = await hooks.step(title, fn);
      steps.push({ id: sid, title, ok: true, ms: Math.round(performance.now() - s0) });
      return v;
    } catch (e) {
      const f =
        e instanceof StepFailure
          ? e
          : new StepFailure(relative, e instanceof Error ? e.message : String(e));
      steps.push({
        id: sid,
        title,
        ok: false,
        ms: Math.round(performance.now() - s0),
        error: {
          level: abs(f.relative),
          relative: f.relative,
          message: f.message,
          ...(f.fix ? { fix: f.fix } : {}),
          ...(f.consoleLines ? { console: f.consoleLines } : {}),
        },
      });
      throw f;
    }
  }

  const outerConsole = async (): Promise<string[]> => {
    const r = await self(['logs', outerName]).catch(() => ({ code: 1, stdout: '', stderr: '' }));
    return r.stdout.trimEnd().split('\n').slice(-15);
  };
  /** Runs a command inside the outer VM through the guest agent. */
  const inOuter = async (argv: string[], timeoutMs: number): Promise<ExecJson> => {
    const r = await self(
      [
        'exec',
        outerName,
        '--json',
        '--timeout',
        String(Math.ceil(timeoutMs / 1000)),
        '--',
        ...argv,
      ],
      {
        timeoutMs: timeoutMs + 30_000,
      },
    );
    if (r.code !== 0 && !r.stdout.trim().startsWith('{'))
      throw new StepFailure(
        1,
        `exec in ${outerName} failed: ${lastError(r)}`,
        lastFix(r),
        await outerConsole(),
      );
    const j = parseJson<ExecJson & { error?: { message: string; hint?: string } }>(
      'nestvirt exec',
      r.stdout,
    );
    if (j.error)
      throw new StepFailure(
        1,
        `exec in ${outerName} failed: ${j.error.message}`,
        j.error.hint,
        await outerConsole(),
      );
    return j;
  };

  try {
    // 1. This machine.
    await step('doctor', 'check this machine (nestvirt doctor)', 0, async () => {
      const r = await self(['doctor', '--json'], { timeoutMs: 120_000 });
      if (r.code !== 0 && r.code !== 1)
        throw new StepFailure(0, `doctor failed: ${lastError(r)}`, lastFix(r));
      const report = parseJson<DoctorReport>('nestvirt doctor', r.stdout);
      hostLevel = report.level;
      plan = planChain(report, { nested: opts.nested });
      summary = plan.summary;
      chain.push({
        level: hostLevel,
        relative: 0,
        name: 'this machine',
        role: 'host',
        runner: plan.hostRunner,
        accel: null,
        readyMs: null,
      });
      if (!plan.possible)
        throw new StepFailure(
          0,
          plan.reason ?? 'no guest can run here',
          plan.fixes.join('; ') || undefined,
        );
    });
    if (!plan) throw new Error('unreachable: no plan after doctor');
    const p: ChainPlan = plan;

    // 2. Images.
    await step('images', 'build the built-in images (tiny, hypervisor)', 0, async (update) => {
      for (const img of ['tiny', 'hypervisor']) {
        update(img);
        const r = await self(['image', 'build', img], {
          timeoutMs: 30 * 60_000,
          onStderrLine: (l) => update(`${img}: ${l}`),
        });
        if (r.code !== 0)
          throw new StepFailure(0, `building image ${img} failed: ${lastError(r)}`, lastFix(r));
      }
    });

    // 3. The outer VM.
    const outerAccel = p.outerAccel;
    const outerReady = await step(
      'outer',
      `start ${outerName} from the hypervisor image (${outerAccel}${opts.nested ? ', nesting exposed' : ', no virtualization extensions'})`,
      1,
      async () => {
        const argv = [
          'run',
          'hypervisor',
          '--name',
          outerName,
          '--accel',
          outerAccel,
          '--memory',
          opts.memory,
          '--cpus',
          String(opts.cpus),
          '--wait',
          '--wait-timeout',
          String(Math.ceil(opts.stepTimeoutMs / 1000)),
          '--json',
        ];
        if (opts.nested) argv.push('--nested');
        const s0 = performance.now();
        const r = await self(argv, { timeoutMs: opts.stepTimeoutMs + 30_000 });
        outerStarted = true;
        if (r.code !== 0)
          throw new StepFailure(
            1,
            `starting ${outerName} failed: ${lastError(r)}`,
            lastFix(r),
            await outerConsole(),
          );
        return Math.round(performance.now() - s0);
      },
    );
    chain.push({
      level: abs(1),
      relative: 1,
      name: outerName,
      role: 'outer',
      runner: outerAccel === 'kvm' ? 'kvm' : 'tcg',
      accel: outerAccel,
      readyMs: outerReady,
    });

    // 4. nestvirt inside the outer VM: doctor, then the inner VM.
    await step('outer-doctor', `nestvirt doctor inside ${outerName}`, 1, async () => {
      const r = await inOuter(['nestvirt', 'doctor', '--json'], 120_000);
      let d: DoctorReport;
      try {
        d = JSON.parse(r.stdout) as DoctorReport;
      } catch {
        throw new StepFailure(
          1,
          `doctor inside ${outerName} did not report: ${(r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ')}`,
          undefined,
          await outerConsole(),
        );
      }
      const want = abs(1);
      if (want !== null && d.level !== want)
        throw new StepFailure(
          1,
          `doctor inside ${outerName} reports level ${d.level}, expected ${want}`,
          'check that the VM received its chain (fw_cfg opt/org.nestvirt/chain)',
        );
      if (!d.verdict.acceleratedVMs) {
        const p = d.verdict.problems;
        throw new StepFailure(
          1,
          `${outerName} cannot run accelerated VMs: ${p.map((x) => x.message).join('; ') || 'no reason given'}`,
          p
            .map((x) => x.fix)
            .filter(Boolean)
            .join('; ') || undefined,
        );
      }
    });

    const innerReady = await step(
      'inner',
      `start ${innerName} under KVM inside ${outerName} (nestvirt run)`,
      2,
      async () => {
        const s0 = performance.now();
        const r = await inOuter(
          [
            'nestvirt',
            'run',
            'tiny',
            '--name',
            innerName,
            '--accel',
            'kvm',
            '--memory',
            '256M',
            '--wait',
            '--wait-timeout',
            '120',
            '--json',
          ],
          opts.stepTimeoutMs,
        );
        if (r.exitCode !== 0) {
          const logs = await inOuter(['nestvirt', 'logs', innerName], 30_000).catch(
            () => undefined,
          );
          throw new StepFailure(
            2,
            `starting ${innerName} inside ${outerName} failed: ${lastError(r)}`,
            lastFix(r),
            logs?.stdout.trimEnd().split('\n').slice(-15),
          );
        }
        return Math.round(performance.now() - s0);
      },
    );
    chain.push({
      level: abs(2),
      relative: 2,
      name: innerName,
      role: 'inner',
      runner: 'kvm',
      accel: 'kvm',
      readyMs: innerReady,
    });

    // 5. The process in the innermost VM.
    await step(
      'process',
      `run a process in ${innerName} that reports its level and accelerator`,
      2,
      async () => {
        const r = await inOuter(
          ['nestvirt', 'exec', innerName, '--', 'sh', '-c', WHOAMI_SCRIPT],
          60_000,
        );
        const w = parseWhoami(r.stdout);
        if (r.exitCode !== 0 || !w)
          throw new StepFailure(
            2,
            `the process in ${innerName} did not report (exit ${r.exitCode}): ${lastError(r)}`,
          );
        toInnermostMs = Math.round(performance.now() - t0);
        const lvl = w.chain?.level ?? null;
        innermost = { ...w, level: lvl, relative: w.chain?.relative ?? 2 };
        const inner = chain[chain.length - 1]!;
        inner.accel = w.accel;
        inner.runner = w.accel;
        if (w.chain && hostLevel !== null && lvl !== abs(2))
          throw new StepFailure(2, `${innerName} reports level ${lvl}, expected ${abs(2)}`);
        if (w.accel !== 'kvm')
          throw new StepFailure(
            2,
            `${innerName} runs under ${w.accel}, not KVM (hypervisor seen: ${w.hypervisor})`,
          );
      },
    );
  } catch (e) {
    if (!(e instanceof StepFailure)) throw e;
  } finally {
    if (outerStarted && !opts.keep) {
      await step('cleanup', `remove ${outerName}`, 0, async () => {
        const r = await self(['rm', '--force', outerName], { timeoutMs: 120_000 });
        if (r.code !== 0)
          throw new StepFailure(0, `removing ${outerName} failed: ${lastError(r)}`, lastFix(r));
      }).catch(() => undefined);
    }
  }
  const ok = steps.every((s) => s.ok) && innermost !== null;
  return {
    schemaVersion: 1,
    ok,
    summary,
    chain,
    steps,
    innermost,
    toInnermostMs,
    totalMs: Math.round(performance.now() - t0),
    kept: opts.keep && outerStarted,
  };
}

/** The demo's exit code: 0 only when the innermost VM ran the process under KVM. */
export function demoExitCode(r: DemoResult): number {
  if (r.ok) return ExitCode.OK;
  const failed = r.steps.find((s) => !s.ok);
  return failed && failed.id !== 'cleanup' ? ExitCode.NOT_POSSIBLE : ExitCode.INTERNAL;
}

export { NestvirtError };
