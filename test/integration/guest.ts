/**
 * Minimal test-side boot of an image with a plain qemu-system-x86_64 argv
 * (the `vm` layer owns real lifecycle code): serial console to a file, the
 * guest agent on a unix socket chardev, and a tiny QGA JSON client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImageSpec } from '../../src/image/types.js';

export interface Guest {
  dir: string;
  proc: ChildProcess;
  serialLog: string;
  qgaSock: string;
  startedAt: number;
  stop(): Promise<void>;
}

/** Boots an image under TCG (-cpu max: SVM exposed), q35, direct kernel boot. */
export async function bootGuest(
  spec: ImageSpec,
  opts: { memMiB?: number; extraArgs?: string[]; overlay?: string } = {},
): Promise<Guest> {
  const dir = await mkdtemp(join(tmpdir(), 'nestvirt-guest-'));
  const serialLog = join(dir, 'serial.log');
  const qgaSock = join(dir, 'qga.sock');
  const argv = [
    '-M',
    'q35',
    '-accel',
    'tcg',
    '-cpu',
    'max',
    '-m',
    String(opts.memMiB ?? spec.minMemoryMiB ?? 256),
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-kernel',
    spec.kernel!,
    '-initrd',
    spec.initrd!,
    '-append',
    spec.cmdline ?? '',
    '-serial',
    `file:${serialLog}`,
    '-chardev',
    `socket,id=qga,path=${qgaSock},server=on,wait=off`,
    '-device',
    'virtio-serial-pci',
    '-device',
    'virtserialport,chardev=qga,name=org.qemu.guest_agent.0',
    ...(opts.overlay ? ['-drive', `file=${opts.overlay},if=virtio,format=qcow2`] : []),
    ...(opts.extraArgs ?? []),
  ];
  const startedAt = performance.now();
  const proc = spawn('qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  proc.on('exit', (code) => {
    if (code) process.stderr.write(`qemu exited ${code}: ${stderr}\n`);
  });
  return {
    dir,
    proc,
    serialLog,
    qgaSock,
    startedAt,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await new Promise((r) => proc.once('exit', r));
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Waits until the serial log contains `text`; returns ms since boot. */
export async function waitSerial(g: Guest, text: string, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const log = await readFile(g.serialLog, 'utf8').catch(() => '');
    if (log.includes(text)) return performance.now() - g.startedAt;
    if (g.proc.exitCode !== null)
      throw new Error(`QEMU exited before "${text}"; console:\n${log.slice(-3000)}`);
    if (performance.now() > deadline)
      throw new Error(`no "${text}" within ${timeoutMs} ms; console:\n${log.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A QGA connection: one JSON request per line, one reply per line. */
export class Qga {
  private buf = '';
  private waiters: ((line: string) => void)[] = [];
  private constructor(private readonly sock: Socket) {
    sock.on('data', (b: Buffer) => {
      this.buf += b.toString();
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i).trim();
        this.buf = this.buf.slice(i + 1);
        if (line) this.waiters.shift()?.(line);
      }
    });
  }

  /** Connects and synchronises (guest-sync); retries until the agent answers. */
  static async connect(path: string, timeoutMs: number): Promise<Qga> {
    const deadline = performance.now() + timeoutMs;
    let last: unknown;
    while (performance.now() < deadline) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path, () => resolve(s));
          s.once('error', reject);
        });
        const q = new Qga(sock);
        const id = Math.floor(Math.random() * 1e9);
        const r = (await q.call('guest-sync', { id }, 1500)) as number;
        if (r === id) return q;
        sock.destroy();
      } catch (e) {
        last = e;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`guest agent did not answer within ${timeoutMs} ms: ${String(last)}`);
  }

  call(execute: string, args?: unknown, timeoutMs = 30_000): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.sock.destroy();
        reject(new Error(`${execute}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push((line) => {
        clearTimeout(t);
        const m = JSON.parse(line) as { return?: unknown; error?: { desc: string } };
        if (m.error) reject(new Error(`${execute}: ${m.error.desc}`));
        else resolve(m.return);
      });
      this.sock.write(
        JSON.stringify({ execute, ...(args === undefined ? {} : { arguments: args }) }) + '\n',
      );
    });
  }

  /** Runs a shell command in the guest; returns its exit code and output. */
  async exec(
    cmd: string,
    timeoutMs = 120_000,
  ): Promise<{ code: number; out: string; err: string }> {
    const { pid } = (await this.call('guest-exec', {
      path: '/bin/sh',
      arg: ['-c', cmd],
      'capture-output': true,
    })) as { pid: number };
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const st = (await this.call('guest-exec-status', { pid })) as {
        exited: boolean;
        exitcode?: number;
        'out-data'?: string;
        'err-data'?: string;
      };
      if (st.exited)
        return {
          code: st.exitcode ?? -1,
          out: Buffer.from(st['out-data'] ?? '', 'base64').toString(),
          err: Buffer.from(st['err-data'] ?? '', 'base64').toString(),
        };
      if (performance.now() > deadline) throw new Error(`guest command timed out: ${cmd}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
