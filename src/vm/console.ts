/**
 * The serial console: attach to the VM's serial socket, pass keys through,
 * detach on Ctrl-] (0x1d, as telnet and virsh do). On a TTY stdin is put in
 * raw mode and restored on every way out (detach, VM stop, error, signal).
 * When stdin is not a TTY its bytes are piped to the console and, at its
 * end, the console is read until it has been quiet for a moment; so
 * `echo uname -a | nestvirt console VM` prints the answer and returns.
 */
import type { Readable, Writable } from 'node:stream';
import { NotPossibleError } from '../errors.js';
import { connectUnix, QmpClient } from './qmp.js';

/**
 * Whether another client holds the serial console: QEMU's socket chardev
 * takes one client, and shows `disconnected:` in its filename when free
 * (QMP query-chardev). A second client would otherwise wait silently.
 */
export async function consoleInUse(qmpPath: string, label = 'serial0'): Promise<boolean> {
  let q: QmpClient | undefined;
  try {
    q = await QmpClient.connect(qmpPath, { timeoutMs: 3000 });
    const devs = await q.execute<{ label: string; filename: string }[]>('query-chardev');
    const d = devs.find((c) => c.label === label);
    return !!d && !d.filename.startsWith('disconnected:');
  } catch {
    return false; // cannot tell: let the attach try
  } finally {
    q?.close();
  }
}

/** The detach key: Ctrl-] */
export const DETACH_BYTE = 0x1d;
export const DETACH_KEY = 'Ctrl-]';

export interface ConsoleIo {
  stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: Writable;
  /** Messages for people (attach/detach lines). */
  note: (line: string) => void;
}

export type ConsoleEnd = 'detached' | 'vm-stopped' | 'input-ended';

/** Splits input at the detach key: what to forward, and whether it was pressed. */
export function scanDetach(chunk: Buffer): { forward: Buffer; detach: boolean } {
  const i = chunk.indexOf(DETACH_BYTE);
  if (i < 0) return { forward: chunk, detach: false };
  return { forward: chunk.subarray(0, i), detach: true };
}

/** Attaches to a serial socket until detach, VM stop or end of piped input. */
export async function attachConsole(
  socketPath: string,
  name: string,
  io: ConsoleIo,
  opts: { quietMs?: number; maxDrainMs?: number } = {},
): Promise<ConsoleEnd> {
  let sock;
  try {
    sock = await connectUnix(socketPath, 5000);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new NotPossibleError(
      'vm.console-unavailable',
      `cannot attach to VM ${name}'s console (${code ?? (e as Error).message})${code === 'ECONNREFUSED' ? ': is another console attached, or is the VM stopping?' : ''}`,
      `check it runs: nestvirt info ${name}`,
    );
  }
  const tty = !!io.stdin.isTTY && typeof io.stdin.setRawMode === 'function';
  io.note(
    `Connected to VM ${name}'s console; detach with ${DETACH_KEY}${tty ? '' : ' (or end the input)'}.`,
  );

  let wasRaw = false;
  const restore = (): void => {
    if (tty && wasRaw) {
      try {
        io.stdin.setRawMode!(false);
      } catch {
        /* stdin gone */
      }
      wasRaw = false;
    }
  };
  const onExit = (): void => restore();
  const onSignal = (sig: NodeJS.Signals): void => {
    restore();
    sock.destroy();
    process.exitCode = 128 + (sig === 'SIGTERM' ? 15 : sig === 'SIGHUP' ? 1 : 2);
    setImmediate(() => process.exit());
  };
  process.once('exit', onExit);
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGHUP'];
  for (const s of signals) process.on(s, onSignal);
  if (tty) {
    io.stdin.setRawMode!(true);
    wasRaw = true;
  }

  const quietMs = opts.quietMs ?? 700;
  const maxDrainMs = opts.maxDrainMs ?? 5000;
  return new Promise<ConsoleEnd>((resolve) => {
    let done = false;
    let drainTimer: NodeJS.Timeout | undefined;
    let drainDeadline: NodeJS.Timeout | undefined;
    const finish = (how: ConsoleEnd): void => {
      if (done) return;
      done = true;
      if (drainTimer) clearTimeout(drainTimer);
      if (drainDeadline) clearTimeout(drainDeadline);
      io.stdin.removeListener('data', onData);
      io.stdin.removeListener('end', onEnd);
      io.stdin.pause();
      restore();
      process.removeListener('exit', onExit);
      for (const s of signals) process.removeListener(s, onSignal);
      sock.destroy();
      io.note(
        how === 'detached'
          ? `\r\nDetached from VM ${name}'s console (it keeps running).`
          : how === 'vm-stopped'
            ? `\r\nVM ${name}'s console closed: the VM stopped.`
            : `Input ended; detached from VM ${name}'s console.`,
      );
      resolve(how);
    };
    const armQuiet = (): void => {
      if (drainTimer) clearTimeout(drainTimer);
      drainTimer = setTimeout(() => finish('input-ended'), quietMs);
    };
    let draining = false;
    sock.on('data', (b: Buffer) => {
      io.stdout.write(b);
      if (draining) armQuiet();
    });
    sock.on('close', () => finish('vm-stopped'));
    sock.on('error', () => finish('vm-stopped'));
    const onData = (b: Buffer | string): void => {
      const buf = typeof b === 'string' ? Buffer.from(b) : b;
      const { forward, detach } = scanDetach(buf);
      if (forward.length) sock.write(forward);
      if (detach) finish('detached');
    };
    const onEnd = (): void => {
      draining = true;
      armQuiet();
      drainDeadline = setTimeout(() => finish('input-ended'), maxDrainMs);
    };
    io.stdin.on('data', onData);
    io.stdin.on('end', onEnd);
    io.stdin.resume();
  });
}
