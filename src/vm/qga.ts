/**
 * A small client for the QEMU guest agent (qemu-ga) protocol, spoken over
 * the unix socket QEMU connects to the guest's virtio-serial port
 * org.qemu.guest_agent.0. The stream may hold stale replies from an earlier
 * client, so every session starts with the documented resync:
 * `guest-sync-delimited` (0xFF marker, then a reply echoing our random id),
 * falling back to `guest-sync` for agents without it. Then commands run one
 * at a time: `guest-ping`, `guest-exec` + `guest-exec-status`, ...
 */
import type { Socket } from 'node:net';
import { NestvirtError, ExitCode } from '../errors.js';
import { connectUnix, JsonLines } from './qmp.js';

/** An error the agent returned ({ class, desc }). */
export class QgaError extends NestvirtError {
  readonly errorClass: string;
  constructor(command: string, cls: string, desc: string) {
    super('vm.qga-error', `guest agent refused ${command}: ${desc}`, {
      exitCode: ExitCode.INTERNAL,
    });
    this.errorClass = cls;
  }
}

/** The agent did not answer in time (not running yet, or busy). */
export class QgaTimeout extends NestvirtError {
  constructor(command: string, ms: number) {
    super('vm.qga-timeout', `the guest agent did not answer ${command} within ${ms} ms`, {
      exitCode: ExitCode.NOT_POSSIBLE,
      hint: 'is qemu-ga running in the guest? see `nestvirt logs VM`',
    });
  }
}

export interface ExecStatus {
  exited: boolean;
  exitcode?: number;
  signal?: number;
  'out-data'?: string;
  'err-data'?: string;
  'out-truncated'?: boolean;
  'err-truncated'?: boolean;
}

export interface ExecResult {
  exitCode: number;
  signal: number | null;
  stdout: Buffer;
  stderr: Buffer;
}

export class QgaClient {
  private readonly docs: Record<string, unknown>[] = [];
  private wake: (() => void) | undefined;
  private closed = false;

  private constructor(private readonly sock: Socket) {
    const lines = new JsonLines((d) => {
      this.docs.push(d);
      this.wake?.();
    });
    sock.on('data', (b: Buffer) => lines.push(b));
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
  }

  /** Connects to the agent's socket and resynchronises the stream. */
  static async connect(path: string, opts: { timeoutMs?: number } = {}): Promise<QgaClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await connectUnix(path, timeoutMs);
    const c = new QgaClient(sock);
    try {
      await c.sync(timeoutMs);
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  /** Waits for the next document satisfying `match`, dropping others. */
  private async next(
    command: string,
    timeoutMs: number,
    match: (d: Record<string, unknown>) => boolean,
  ): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      while (this.docs.length) {
        const d = this.docs.shift()!;
        if (match(d)) return d;
      }
      if (this.closed)
        throw new NestvirtError(
          'vm.qga-closed',
          `the guest agent connection closed during ${command}`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw new QgaTimeout(command, timeoutMs);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          this.wake = undefined;
          resolve();
        };
      });
    }
  }

  private send(doc: Record<string, unknown>, delimited = false): void {
    const text = JSON.stringify(doc) + '\n';
    this.sock.write(delimited ? Buffer.concat([Buffer.from([0xff]), Buffer.from(text)]) : text);
  }

  /**
   * Waits until the agent at `path` answers anything, over one connection:
   * QEMU leaves what we send in the socket until the guest opens its port,
   * so a `guest-sync-delimited` sent now is read the moment qemu-ga starts
   * and the answer marks that moment (no polling granularity). The request
   * is repeated every `sliceMs` in case the agent opened and closed the port
   * early; `check` runs between slices (throw from it to stop waiting, e.g.
   * when QEMU exited). Throws QgaTimeout after timeoutMs.
   */
  static async waitForAgent(
    path: string,
    opts: { timeoutMs: number; check?: () => Promise<void> | void; sliceMs?: number },
  ): Promise<void> {
    const deadline = Date.now() + opts.timeoutMs;
    const sliceMs = opts.sliceMs ?? 500;
    const expired = (): boolean => Date.now() >= deadline;
    for (;;) {
      let sock: Socket | undefined;
      try {
        sock = await connectUnix(path, 1000);
      } catch {
        /* QEMU has not made the socket yet */
      }
      if (sock) {
        const c = new QgaClient(sock);
        try {
          const ids = new Set<number>();
          while (!c.closed) {
            const id = newId();
            ids.add(id);
            c.send({ execute: 'guest-sync-delimited', arguments: { id } }, true);
            const answered = await c
              .next(
                'guest-sync-delimited',
                Math.max(1, Math.min(sliceMs, deadline - Date.now())),
                (x) =>
                  // An old agent without guest-sync-delimited answers with an error: still an answer.
                  ids.has(x.return as number) || 'error' in x,
              )
              .then(
                () => true,
                () => false,
              );
            if (answered) return;
            await opts.check?.();
            if (expired()) throw new QgaTimeout('guest-sync-delimited', opts.timeoutMs);
          }
        } finally {
          c.close();
        }
      }
      await opts.check?.();
      if (expired()) throw new QgaTimeout('guest-sync-delimited', opts.timeoutMs);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Resynchronises: drops stale replies until the agent echoes our id. */
  async sync(timeoutMs = 5000): Promise<void> {
    const id = newId();
    this.docs.length = 0;
    this.send({ execute: 'guest-sync-delimited', arguments: { id } }, true);
    const d = await this.next(
      'guest-sync-delimited',
      timeoutMs,
      (x) => x.return === id || 'error' in x,
    );
    if (d.return === id) return;
    const err = d.error as { class?: string } | undefined;
    if (err?.class !== 'CommandNotFound') {
      // An error from a stale request; resync once more.
      const d2 = await this.next('guest-sync-delimited', timeoutMs, (x) => x.return === id);
      if (d2.return === id) return;
    }
    const id2 = newId();
    this.send({ execute: 'guest-sync', arguments: { id: id2 } });
    await this.next('guest-sync', timeoutMs, (x) => x.return === id2);
  }

  /** Runs one agent command and returns its `return` value. */
  async execute<T = unknown>(
    command: string,
    args?: Record<string, unknown>,
    opts: { timeoutMs?: number } = {},
  ): Promise<T> {
    this.send({ execute: command, ...(args ? { arguments: args } : {}) });
    const d = await this.next(
      command,
      opts.timeoutMs ?? 10_000,
      (x) => 'return' in x || 'error' in x,
    );
    if ('error' in d) {
      const e = d.error as { class?: string; desc?: string };
      throw new QgaError(command, e.class ?? 'GenericError', e.desc ?? 'unknown error');
    }
    return d.return as T;
  }

  /** `guest-ping`: resolves when the agent answers. */
  async ping(timeoutMs = 5000): Promise<void> {
    await this.execute('guest-ping', undefined, { timeoutMs });
  }

  /**
   * Runs a program in the guest and waits for it: guest-exec with
   * capture-output, then guest-exec-status polling (10 ms growing to 100 ms:
   * a nested `nestvirt exec` hop lasts about a second, and a longer step
   * would mostly add waiting after the command is done).
   * Throws QgaTimeout when it has not exited after timeoutMs.
   */
  async exec(
    argv: string[],
    opts: { input?: Buffer; env?: string[]; timeoutMs?: number } = {},
  ): Promise<ExecResult> {
    const [path, ...arg] = argv;
    if (!path)
      throw new NestvirtError('vm.exec-empty', 'no command given', { exitCode: ExitCode.USAGE });
    const started = await this.execute<{ pid: number }>('guest-exec', {
      path,
      arg,
      'capture-output': true,
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.input ? { 'input-data': opts.input.toString('base64') } : {}),
    });
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    let delay = 10;
    for (;;) {
      const st = await this.execute<ExecStatus>('guest-exec-status', { pid: started.pid });
      if (st.exited)
        return {
          exitCode: st.exitcode ?? (st.signal !== undefined ? 128 + st.signal : 0),
          signal: st.signal ?? null,
          stdout: Buffer.from(st['out-data'] ?? '', 'base64'),
          stderr: Buffer.from(st['err-data'] ?? '', 'base64'),
        };
      if (Date.now() >= deadline)
        throw new QgaTimeout(`${argv.join(' ')} (still running in the guest)`, timeoutMs);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(100, delay * 2);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

/** A request id for guest-sync (any positive 31-bit number; it need not be secret). */
function newId(): number {
  return 1 + Math.floor(Math.random() * (2 ** 31 - 2));
}
