/**
 * VM lifecycle: create, start, wait until ready, stop, kill, restart, remove.
 * The CLI commands (src/cli/run.ts, start.ts, ...) and other layers (demo,
 * net, cloud-init) call these; they are the one code path that starts a VM.
 *
 * Every mutating call holds the VM's lock; creating claims the name with an
 * atomic mkdir of the VM directory; a failure part-way undoes what was done
 * (revert stack), so no half-made VM is left behind.
 */
import { accessSync, closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { vmNicsDown, vmNicsRemoved, vmNicsStarted, vmNicsUp } from '../net/vm-hooks.js';
import { rename, rm, stat, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { childProcess, crypto } from '../util/lazy.js';
import { childChain } from '../host/chain.js';
import { NestvirtError, NotPossibleError, UsageError, ExitCode } from '../errors.js';
import type { ImageSpec } from '../image/types.js';
import { writeJson } from '../state/store.js';
import type { Runner } from '../util/exec.js';
import type { Progress } from '../cli/output.js';
import { qemuFeatures, type QemuFeatures } from './features.js';
import { chooseAccel, hostSize, hostVerdict, type HostVerdict } from './host.js';
import { formatBytes, checkVmName } from './parse.js';
import { qemuArgv } from './qemu-argv.js';
import { QgaClient, QgaError, QgaTimeout, type ExecResult } from './qga.js';
import { QmpClient, awaitQmp } from './qmp.js';
import {
  clearRuntimeFiles,
  lastExit,
  lockVm,
  MAX_SOCKET_PATH,
  pidIsOurs,
  reconcile,
  tailLines,
  vmPaths,
  vmsDir,
  type VmPaths,
} from './state.js';
import type { AccelRequest, DiskSpec, LaunchSpec, NicSpec, VmRuntime, VmSpec } from './types.js';
import { trace } from '../util/trace.js';

/** Looks up (and builds if needed) an image: src/image/store.ts `getImage`. */
export type ImageLookup = (opts: {
  root: string;
  name: string;
  run: Runner;
  env: NodeJS.ProcessEnv;
  progress?: Progress;
  note?: (line: string) => void;
}) => Promise<ImageSpec>;

/** What every lifecycle call needs from its caller. */
export interface VmDeps {
  root: string;
  run: Runner;
  env: NodeJS.ProcessEnv;
  /** Notes for people (accelerator fallback, nesting warnings): stderr in the CLI. */
  note?: (line: string) => void;
  /** Live task list for long work (an image build). */
  progress?: Progress;
  /** Overrides for tests: host verdict and QEMU features. */
  hostVerdict?: HostVerdict;
  features?: QemuFeatures;
}

export interface CreateOptions {
  name: string;
  /** Image name; undefined with --kernel (direct kernel boot without an image). */
  image?: string;
  cpus: number;
  memoryMiB: number;
  /** Size of the VM's disk (grows the overlay; a blank disk when the image has none). */
  diskSizeBytes?: number;
  nested: boolean;
  accel: AccelRequest;
  kernel?: string;
  initrd?: string;
  append?: string;
  nics: NicSpec[];
  /** A NoCloud seed image to attach (written by the cloud-init layer into the VM dir). */
  seed?: string;
  /**
   * Runs inside the new VM's directory, under its lock, before spec.json is
   * written (e.g. the cloud-init layer writes seed.iso to `paths.seed` and
   * returns `{ seed: paths.seed }`). A throw removes the half-made VM.
   */
  prepare?: (
    paths: VmPaths,
    spec: VmSpec,
    image: ImageSpec | undefined,
  ) => Promise<Partial<VmSpec> | void>;
}

async function mustExist(what: string, path: string): Promise<void> {
  try {
    accessSync(path, constants.R_OK);
  } catch {
    throw new NotPossibleError(
      'vm.missing-file',
      `${what} ${path} is missing or unreadable`,
      'rebuild or re-import the image (`nestvirt image ls`), or check the path',
    );
  }
}

/** Checks a request against this host's size: one clear line each. */
export function checkHostLimits(o: { cpus: number; memoryMiB: number }, host = hostSize()): void {
  if (host.memBytes > 0 && o.memoryMiB * 1024 * 1024 > host.memBytes)
    throw new NotPossibleError(
      'vm.memory-too-big',
      `--memory ${formatBytes(o.memoryMiB * 1024 * 1024)} is more than this host has (${formatBytes(host.memBytes)})`,
      `ask for less, e.g. --memory ${Math.max(64, Math.floor(host.memBytes / 1024 / 1024 / 2))}M`,
    );
  if (o.cpus > host.cpus)
    throw new NotPossibleError(
      'vm.cpus-too-many',
      `--cpus ${o.cpus} is more than this host has (${host.cpus})`,
      `ask for at most --cpus ${host.cpus}`,
    );
}

/** Validates the name and the socket path lengths for a VM under root. */
export function checkVmPaths(root: string, name: string): VmPaths {
  checkVmName(name);
  const p = vmPaths(root, name);
  const longest = [p.serial, p.qmp, p.qga].reduce((a, b) => (a.length > b.length ? a : b));
  if (Buffer.byteLength(longest) > MAX_SOCKET_PATH)
    throw new UsageError(
      'vm.path-too-long',
      `the VM's socket path ${longest} is longer than unix sockets allow (${MAX_SOCKET_PATH} bytes)`,
      'use a shorter --name or a shorter NESTVIRT_HOME',
    );
  return p;
}

/**
 * Defines a VM: claims the name (atomic mkdir), resolves the image, makes
 * the disk overlay and writes spec.json. Does not start it.
 */
export async function createVm(
  o: CreateOptions,
  deps: VmDeps,
  getImage?: ImageLookup,
): Promise<VmSpec> {
  trace('create: begin');
  const p = checkVmPaths(deps.root, o.name);
  checkHostLimits(o);
  if (o.kernel) await mustExist('kernel', o.kernel);
  if (o.initrd) await mustExist('initrd', o.initrd);

  let image: ImageSpec | undefined;
  if (o.image) {
    if (!getImage)
      throw new NotPossibleError(
        'vm.no-images',
        'images are not available in this build',
        'boot a kernel directly: --kernel FILE --initrd FILE',
      );
    image = await getImage({
      root: deps.root,
      name: o.image,
      run: deps.run,
      env: deps.env,
      ...(deps.progress ? { progress: deps.progress } : {}),
      ...(deps.note ? { note: deps.note } : {}),
    });
    if (image.kernel) await mustExist(`image ${o.image}'s kernel`, image.kernel);
    if (image.initrd) await mustExist(`image ${o.image}'s initrd`, image.initrd);
    if (image.disk) await mustExist(`image ${o.image}'s disk`, image.disk);
    if (!image.kernel && !image.disk && !o.kernel)
      throw new NotPossibleError(
        'vm.image-empty',
        `image ${o.image} has neither a kernel nor a disk`,
        `rebuild it: nestvirt image build ${o.image}`,
      );
  } else if (!o.kernel)
    throw new UsageError(
      'vm.no-boot',
      'nothing to boot: give an IMAGE or --kernel FILE',
      'e.g. nestvirt run tiny',
    );

  mkdirSync(vmsDir(deps.root), { recursive: true });
  try {
    mkdirSync(p.dir); // the claim: exactly one creator wins
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST')
      throw new UsageError(
        'vm.exists',
        `a VM named ${JSON.stringify(o.name)} already exists`,
        `choose another --name, or remove it first: nestvirt rm ${o.name}`,
      );
    throw e;
  }
  const lock = await lockVm(p, 30_000).catch(async (e) => {
    await rm(p.dir, { recursive: true, force: true });
    throw e;
  });
  try {
    const kernel = o.kernel ?? image?.kernel;
    const initrd = o.kernel ? o.initrd : (o.initrd ?? image?.initrd);
    // Built-in images take their host name from the command line (src/image/guest.ts).
    const hostnameArg = !o.kernel && image?.builtin ? `nestvirt.hostname=${o.name}` : undefined;
    const append =
      [o.kernel ? undefined : image?.cmdline, hostnameArg, o.append].filter(Boolean).join(' ') ||
      undefined;
    let disk: VmSpec['disk'];
    if (image?.disk) {
      const baseSize = await virtualSize(deps.run, image.disk, image.diskFormat ?? 'qcow2');
      const size = Math.max(baseSize, o.diskSizeBytes ?? 0);
      await deps.run([
        'qemu-img',
        'create',
        '-q',
        '-f',
        'qcow2',
        '-F',
        image.diskFormat ?? 'qcow2',
        '-b',
        image.disk,
        p.overlay,
        String(size),
      ]);
      disk = {
        path: p.overlay,
        backing: image.disk,
        backingFormat: image.diskFormat ?? 'qcow2',
        sizeBytes: size,
      };
    } else if (o.diskSizeBytes) {
      await deps.run([
        'qemu-img',
        'create',
        '-q',
        '-f',
        'qcow2',
        p.overlay,
        String(o.diskSizeBytes),
      ]);
      disk = { path: p.overlay, sizeBytes: o.diskSizeBytes };
    }
    const spec: VmSpec = {
      schema: 1,
      name: o.name,
      image: o.image ?? null,
      cpus: o.cpus,
      memoryMiB: o.memoryMiB,
      nested: o.nested,
      accel: o.accel,
      ...(kernel ? { kernel } : {}),
      ...(initrd ? { initrd } : {}),
      ...(append ? { append } : {}),
      ...(disk ? { disk } : {}),
      ...(o.seed ? { seed: o.seed } : {}),
      nics: o.nics,
      imageFeatures: image?.features ?? {
        guestAgent: true,
        sshd: false,
        cloudInit: false,
        kvmModules: false,
        nestvirt: false,
      },
      createdAt: new Date().toISOString(),
    };
    const extra = o.prepare ? await o.prepare(p, spec, image) : undefined;
    const final: VmSpec = { ...spec, ...(extra ?? {}) };
    const runtime: VmRuntime = { state: 'stopped', pid: null, accel: null };
    await writeJson(p.runtime, runtime);
    await writeJson(p.spec, final); // last: a dir with spec.json is a VM
    return final;
  } catch (e) {
    await rm(p.dir, { recursive: true, force: true });
    throw e;
  } finally {
    await lock.release();
  }
}

async function virtualSize(run: Runner, path: string, format: string): Promise<number> {
  const r = await run(['qemu-img', 'info', '--output=json', '-f', format, path], { check: false });
  if (r.code !== 0)
    throw new NotPossibleError(
      'vm.image-corrupt',
      `the image disk ${path} is not a readable ${format} file: ${r.stderr.trim().split('\n').pop() ?? ''}`,
      'rebuild or re-import the image',
    );
  try {
    return (JSON.parse(r.stdout) as { 'virtual-size': number })['virtual-size'];
  } catch {
    throw new NotPossibleError(
      'vm.image-corrupt',
      `qemu-img could not describe ${path}`,
      'rebuild or re-import the image',
    );
  }
}

/** Resolves a spec into the launch QEMU gets (accelerator chosen, chain computed). */
export function launchSpec(
  spec: VmSpec,
  p: VmPaths,
  accel: 'kvm' | 'tcg',
  hv: HostVerdict,
): LaunchSpec {
  const disks: DiskSpec[] = [];
  if (spec.disk) disks.push({ path: spec.disk.path, format: 'qcow2' });
  if (spec.seed) disks.push({ path: spec.seed, format: 'raw', readonly: true });
  return {
    name: spec.name,
    accel,
    nested: spec.nested,
    cpus: spec.cpus,
    memoryMiB: spec.memoryMiB,
    ...(spec.kernel ? { kernel: spec.kernel } : {}),
    ...(spec.initrd ? { initrd: spec.initrd } : {}),
    ...(spec.append ? { append: spec.append } : {}),
    disks,
    nics: spec.nics,
    qmp: p.qmp,
    qga: p.qga,
    serial: p.serial,
    serialLog: p.serialLog,
    pidfile: p.pid,
    chain: childChain(hv.chain, spec.name, accel),
  };
}

export interface StartResult {
  pid: number;
  accel: 'kvm' | 'tcg';
  notes: string[];
  alreadyRunning: boolean;
  startedAt: string;
}

/** Starts a defined VM's QEMU (detached; the CLI returns). No-op when it runs already. */
export async function startVm(name: string, deps: VmDeps): Promise<StartResult> {
  const p = checkVmPaths(deps.root, name);
  const lock = await lockVm(p);
  try {
    const r = await reconcile(p, { write: 'locked' });
    if (r.pid !== null)
      return {
        pid: r.pid,
        accel: r.runtime.accel ?? 'tcg',
        notes: [],
        alreadyRunning: true,
        startedAt: r.runtime.startedAt ?? '',
      };
    const spec = r.spec;
    const [features, hv] = await Promise.all([
      deps.features ?? qemuFeatures(deps.root, deps.run, deps.env),
      deps.hostVerdict ?? hostVerdict(deps.root, deps.run, deps.env),
    ]);
    checkHostLimits(spec);
    const choice = chooseAccel(spec.accel, spec.nested, hv, features);
    for (const n of choice.notes) deps.note?.(n);
    for (const [what, f] of [
      ['kernel', spec.kernel],
      ['initrd', spec.initrd],
      ['disk', spec.disk?.path],
      ['backing disk', spec.disk?.backing],
      ['seed', spec.seed],
    ] as const)
      if (f) await mustExist(what, f);
    trace('start: features and host verdict');
    const launch = launchSpec(spec, p, choice.accel, hv);
    const argv = [features.binary, ...qemuArgv(launch, features)];
    await clearRuntimeFiles(p);
    const startedAt = new Date().toISOString();
    await vmNicsUp(deps, name, spec.nics);
    trace('start: spawn QEMU');
    const pid = await spawnQemu(argv, p).catch(async (e) => {
      await vmNicsDown(deps, name).catch(() => {});
      throw e;
    });
    await vmNicsStarted(deps, name);
    const runtime: VmRuntime = {
      state: 'running',
      pid,
      accel: choice.accel,
      ...(choice.notes.length ? { accelNote: choice.notes.join('; ') } : {}),
      qemu: features.binary,
      argv,
      startedAt,
      chain: launch.chain,
    };
    trace('start: QMP greeted');
    await writeJson(p.runtime, runtime);
    trace('start: runtime written');
    return { pid, accel: choice.accel, notes: choice.notes, alreadyRunning: false, startedAt };
  } finally {
    await lock.release();
  }
}

/** True while PID exists and is not a zombie (reads /proc/PID/stat). */
function processAlive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/**
 * Spawns QEMU detached (own session, output to qemu.log) and waits until its
 * QMP monitor greets, i.e. the machine is built and running. A QEMU that
 * exits first is reported with the last line of its log.
 */
async function spawnQemu(argv: string[], p: VmPaths, timeoutMs = 60_000): Promise<number> {
  const log = openSync(p.qemuLog, 'w');
  let child;
  try {
    writeSync(
      log,
      `=== ${new Date().toISOString()} ${argv.map((a) => (/[\s,'"]/.test(a) ? JSON.stringify(a) : a)).join(' ')}\n`,
    );
    child = childProcess().spawn(argv[0]!, argv.slice(1), {
      cwd: p.dir,
      detached: true,
      stdio: ['ignore', log, log],
    });
  } finally {
    closeSync(log);
  }
  let exited: { code: number | null; signal: string | null } | undefined;
  let spawnError: Error | undefined;
  child.on('exit', (code, signal) => (exited = { code, signal }));
  child.on('error', (e) => (spawnError = e));
  child.unref();
  const greeted = await awaitQmp(p.qmp, {
    deadline: Date.now() + timeoutMs,
    check: async () => {
      if (spawnError)
        throw new NotPossibleError(
          'vm.qemu-failed',
          `cannot run ${argv[0]}: ${spawnError.message}`,
          'install QEMU: apt-get install qemu-system-x86',
        );
      // 'exit' can arrive late for a detached, unref'd child on a loaded
      // machine: a zombie or vanished pid is an exit too.
      if (!exited && !processAlive(child.pid)) exited = { code: child.exitCode, signal: null };
      if (exited) {
        const tail = (await tailLines(p.qemuLog, 3)).filter((l) => !l.startsWith('=== '));
        throw new NotPossibleError(
          'vm.qemu-failed',
          `QEMU exited at start (${exited.code ?? exited.signal}): ${tail.join(' | ').replace(/^qemu-system-\S+: /, '') || 'no message'}`,
          `see ${p.qemuLog}`,
        );
      }
    },
  });
  if (greeted) return child.pid!;
  try {
    process.kill(child.pid!, 'SIGKILL');
  } catch {
    /* gone */
  }
  throw new NotPossibleError(
    'vm.qemu-timeout',
    `QEMU did not come up within ${timeoutMs / 1000} s`,
    `see ${p.qemuLog}`,
  );
}

export interface ReadyResult {
  /** Milliseconds from QEMU's start to the guest agent's first answer. */
  readyMs: number;
}

/** Waits until the guest agent answers guest-ping; fails early when QEMU stops. */
export async function waitReady(
  name: string,
  deps: VmDeps,
  timeoutMs = 120_000,
): Promise<ReadyResult> {
  const p = vmPaths(deps.root, name);
  const r0 = await reconcile(p, { write: 'try' });
  if (r0.pid === null)
    throw new NotPossibleError(
      'vm.not-running',
      `VM ${name} is not running`,
      `start it: nestvirt start ${name}`,
    );
  if (!r0.spec.imageFeatures.guestAgent)
    throw new NotPossibleError(
      'vm.no-agent',
      `VM ${name}'s image has no guest agent, so --wait cannot tell when it is ready`,
      'drop --wait, or use an image running qemu-ga',
    );
  const startedMs = r0.runtime.startedAt ? Date.parse(r0.runtime.startedAt) : Date.now();
  try {
    await QgaClient.waitForAgent(p.qga, {
      timeoutMs,
      check: async () => {
        if (await pidIsOurs(r0.pid, p.pid)) return;
        const r = await reconcile(p, { write: 'try' });
        const tail = r.runtime.lastExit?.consoleTail.slice(-5) ?? [];
        throw new NotPossibleError(
          'vm.stopped-early',
          `VM ${name} stopped before it was ready${tail.length ? `; last console lines:\n    ${tail.join('\n    ')}` : ''}`,
          `see nestvirt logs ${name}`,
        );
      },
    });
  } catch (e) {
    if (e instanceof QgaTimeout)
      throw new NotPossibleError(
        'vm.not-ready',
        `VM ${name}'s guest agent did not answer within ${timeoutMs / 1000} s`,
        `see what it is doing: nestvirt logs ${name} (or nestvirt console ${name})`,
      );
    throw e;
  }
  trace('wait: guest agent answered');
  const readyMs = Date.now() - startedMs;
  await recordReady(p, readyMs);
  return { readyMs };
}

async function recordReady(p: VmPaths, readyMs: number): Promise<void> {
  try {
    const lock = await lockVm(p, 2000);
    try {
      const r = await reconcile(p, { write: 'locked' });
      if (r.pid !== null) await writeJson(p.runtime, { ...r.runtime, readyMs });
    } finally {
      await lock.release();
    }
  } catch {
    /* busy: the figure is still returned */
  }
}

export interface StopResult {
  /** How it ended: `powerdown` (guest shut down), `quit` / `kill` (forced), `none` (was not running). */
  how: 'powerdown' | 'quit' | 'kill' | 'none';
  ms: number;
}

async function waitGone(pid: number, marker: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await pidIsOurs(pid, marker))) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !(await pidIsOurs(pid, marker));
}

/**
 * Stops a VM: ACPI power button through QMP (`system_powerdown`), waits up
 * to timeoutS for the guest to power off, then QMP `quit`, then SIGKILL.
 */
export async function stopVm(
  name: string,
  deps: VmDeps,
  opts: { timeoutS?: number; force?: boolean } = {},
): Promise<StopResult> {
  const p = checkVmPaths(deps.root, name);
  const t0 = Date.now();
  const lock = await lockVm(p);
  try {
    const r = await reconcile(p, { write: 'locked' });
    if (r.pid === null) return { how: 'none', ms: 0 };
    const how = await stopPid(p, r.pid, opts.force ? 0 : (opts.timeoutS ?? 30));
    await writeJson(p.runtime, {
      ...r.runtime,
      state: 'stopped',
      pid: null,
      lastExit: await lastExit(p, how === 'powerdown' ? 'stopped' : 'killed'),
    });
    await clearRuntimeFiles(p);
    await vmNicsDown(deps, name);
    return { how, ms: Date.now() - t0 };
  } finally {
    await lock.release();
  }
}

async function stopPid(p: VmPaths, pid: number, timeoutS: number): Promise<StopResult['how']> {
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(p.qmp, { timeoutMs: 3000 });
  } catch {
    /* monitor gone or wedged: go straight to signals */
  }
  try {
    if (qmp && timeoutS > 0) {
      try {
        await qmp.execute('system_powerdown');
        if (await waitGone(pid, p.pid, timeoutS * 1000)) return 'powerdown';
      } catch {
        /* fall through to quit */
      }
    }
    if (qmp && !qmp.isClosed) {
      try {
        await qmp.execute('quit', undefined, { timeoutMs: 3000 });
      } catch {
        /* closes as it quits */
      }
      if (await waitGone(pid, p.pid, 5000)) return 'quit';
    }
  } finally {
    qmp?.close();
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* already gone */
  }
  await waitGone(pid, p.pid, 5000);
  return 'kill';
}

/** Kills a VM's QEMU at once (SIGKILL); the guest gets no chance to shut down. */
export async function killVm(name: string, deps: VmDeps): Promise<{ killed: boolean }> {
  const p = checkVmPaths(deps.root, name);
  const lock = await lockVm(p);
  try {
    const r = await reconcile(p, { write: 'locked' });
    if (r.pid === null) return { killed: false };
    try {
      process.kill(r.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
    await waitGone(r.pid, p.pid, 5000);
    await writeJson(p.runtime, {
      ...r.runtime,
      state: 'stopped',
      pid: null,
      lastExit: await lastExit(p, 'killed'),
    });
    await clearRuntimeFiles(p);
    await vmNicsDown(deps, name);
    return { killed: true };
  } finally {
    await lock.release();
  }
}

/**
 * Removes a VM: its directory, overlay and logs. A running VM is refused
 * unless `force` (then it is killed first). The directory is renamed away
 * first, so a half-deleted VM never shows up in `ls`.
 */
export async function rmVm(
  name: string,
  deps: VmDeps,
  opts: { force?: boolean } = {},
): Promise<{ killed: boolean }> {
  const p = checkVmPaths(deps.root, name);
  const lock = await lockVm(p);
  try {
    const r = await reconcile(p, { write: 'locked' });
    let killed = false;
    if (r.pid !== null) {
      if (!opts.force)
        throw new NotPossibleError(
          'vm.running',
          `VM ${name} is running`,
          `stop it first (nestvirt stop ${name}), or remove it anyway: nestvirt rm --force ${name}`,
        );
      try {
        process.kill(r.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await waitGone(r.pid, p.pid, 5000);
      killed = true;
    }
    await vmNicsRemoved(deps, name);
    const trash = join(
      vmsDir(deps.root),
      `.${name}.removing-${crypto().randomBytes(3).toString('hex')}`,
    );
    await rename(p.dir, trash);
    await rm(trash, { recursive: true, force: true });
    return { killed };
  } finally {
    await lock.release();
  }
}

/** Removes a VM whose spec cannot be read (`rm --force` on a broken VM dir). */
export async function rmBroken(name: string, deps: VmDeps): Promise<boolean> {
  const p = checkVmPaths(deps.root, name);
  try {
    await stat(p.dir);
  } catch {
    return false;
  }
  const lock = await lockVm(p);
  try {
    const trash = join(
      vmsDir(deps.root),
      `.${name}.removing-${crypto().randomBytes(3).toString('hex')}`,
    );
    await rename(p.dir, trash);
    await rm(trash, { recursive: true, force: true });
    return true;
  } finally {
    await lock.release();
  }
}

/** Runs a command in the guest through the guest agent; returns its output and exit code. */
export async function execInVm(
  name: string,
  argv: string[],
  deps: VmDeps,
  opts: { timeoutMs?: number; input?: Buffer; env?: string[] } = {},
): Promise<ExecResult> {
  const p = checkVmPaths(deps.root, name);
  const r = await reconcile(p, { write: 'try' });
  if (r.pid === null)
    throw new NotPossibleError(
      'vm.not-running',
      `VM ${name} is not running`,
      `start it: nestvirt start ${name} --wait`,
    );
  let c: QgaClient;
  try {
    c = await QgaClient.connect(p.qga, { timeoutMs: 10_000 });
  } catch (e) {
    throw new NotPossibleError(
      'vm.no-agent',
      `cannot reach VM ${name}'s guest agent: ${(e as Error).message}`,
      `wait for it to boot (nestvirt start ${name} --wait), and check the image runs qemu-ga`,
    );
  }
  try {
    return await c.exec(argv, opts);
  } catch (e) {
    if (e instanceof QgaError && /Failed to execute child process|No such file/.test(e.message))
      throw new NestvirtError(
        'vm.exec-not-found',
        `in VM ${name}: cannot run ${JSON.stringify(argv[0])}: ${e.message.replace(/^.*error was '?/, '').replace(/'$/, '')}`,
        { exitCode: 127, hint: 'check the command exists in the guest (exec VM -- ls /bin)' },
      );
    if ((e as NestvirtError).code === 'vm.qga-timeout')
      throw new NestvirtError(
        'vm.exec-timeout',
        `in VM ${name}: ${JSON.stringify(argv.join(' '))} did not finish within ${(opts.timeoutMs ?? 60_000) / 1000} s (it may still be running)`,
        { exitCode: 124, hint: 'raise --timeout' },
      );
    throw e;
  } finally {
    c.close();
  }
}

export { ExitCode };
