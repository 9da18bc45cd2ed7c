/**
 * Typed errors. Every error a user can see carries a one-line message that
 * quotes what was wrong and, where there is one, a hint that is the fix.
 * The CLI prints `nestvirt: <message>` (+ `  fix: <hint>`) and exits with
 * `exitCode`; no stack trace unless NESTVIRT_DEBUG=1.
 */

/** Exit codes, as fixed in DESIGN.md. */
export const ExitCode = {
  OK: 0,
  /** The thing asked is not possible here (negative verdict, failed check). */
  NOT_POSSIBLE: 1,
  /** Usage or input error. */
  USAGE: 2,
  /** Internal failure: a bug or an unexpected failure of a tool we ran. */
  INTERNAL: 3,
  /** Another command holds the lock on this object. */
  BUSY: 4,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export class NestvirtError extends Error {
  /** Stable machine-readable code, e.g. `usage.unknown-flag`, `vm.not-found`. */
  readonly code: string;
  readonly hint: string | undefined;
  readonly exitCode: number;
  constructor(
    code: string,
    message: string,
    opts: { hint?: string; exitCode?: number; cause?: unknown } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'NestvirtError';
    this.code = code;
    this.hint = opts.hint;
    this.exitCode = opts.exitCode ?? ExitCode.INTERNAL;
  }
  toJSON(): { code: string; message: string; hint?: string } {
    return { code: this.code, message: this.message, ...(this.hint ? { hint: this.hint } : {}) };
  }
}

/** Bad command line or bad input file: exit 2. */
export class UsageError extends NestvirtError {
  constructor(code: string, message: string, hint?: string) {
    super(code, message, { hint, exitCode: ExitCode.USAGE });
    this.name = 'UsageError';
  }
}

/** The request is valid but cannot be done on this machine: exit 1. */
export class NotPossibleError extends NestvirtError {
  constructor(code: string, message: string, hint?: string, cause?: unknown) {
    super(code, message, { hint, exitCode: ExitCode.NOT_POSSIBLE, cause });
    this.name = 'NotPossibleError';
  }
}

/** Another nestvirt command holds the object's lock: exit 4. */
export class BusyError extends NestvirtError {
  constructor(what: string, holder: string) {
    super('state.busy', `${what} is busy: ${holder}`, {
      hint: 'wait for the other nestvirt command to finish, then try again',
      exitCode: ExitCode.BUSY,
    });
    this.name = 'BusyError';
  }
}

/** Wraps an unknown thrown value into a NestvirtError. */
export function asNestvirtError(e: unknown): NestvirtError {
  if (e instanceof NestvirtError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err && err.code === 'ENOSPC')
    return new NestvirtError('host.disk-full', `no space left on device: ${err.message}`, {
      hint: 'free disk space under the nestvirt state directory (see NESTVIRT_HOME) and retry',
      exitCode: ExitCode.NOT_POSSIBLE,
      cause: e,
    });
  if (err && (err.code === 'EACCES' || err.code === 'EPERM'))
    return new NestvirtError('host.permission', `permission denied: ${err.message}`, {
      hint: 'run as root (sudo) or set NESTVIRT_HOME to a directory you own',
      exitCode: ExitCode.NOT_POSSIBLE,
      cause: e,
    });
  const msg = e instanceof Error ? e.message : String(e);
  return new NestvirtError('internal', msg, { exitCode: ExitCode.INTERNAL, cause: e });
}
