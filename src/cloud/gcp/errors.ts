/**
 * Google's errors, as one line each with the fix. Google APIs answer
 * `{error: {code, message, status, errors[], details[]}}`; the REST client
 * (gaxios) surfaces it as `response.status` + `response.data.error`, the
 * gax client as a GoogleError with a gRPC `code`; compute operations carry
 * `error.errors[{code, message}]` when they finish badly.
 */
import { NestvirtError, NotPossibleError, ExitCode } from '../../errors.js';

/** What was being done, to name the object and suggest the fix. */
export interface ErrorContext {
  /** e.g. `instance demo-l1`, `project my-proj`. */
  what: string;
  project?: string;
  zone?: string;
  /** The role that grants this call, for 403s. */
  role?: string;
  /** The API this call uses, for "API not enabled". */
  service?: string;
  /** Fix for a 404, when the object's name is most likely wrong. */
  notFoundFix?: string;
  /** Fix for 409 ALREADY_EXISTS. */
  existsFix?: string;
}

interface Normalised {
  httpStatus?: number;
  status?: string;
  reason?: string;
  message: string;
}

// gRPC codes, for errors from the gax client.
const GRPC_TO_HTTP: Record<number, [number, string]> = {
  3: [400, 'INVALID_ARGUMENT'],
  5: [404, 'NOT_FOUND'],
  6: [409, 'ALREADY_EXISTS'],
  7: [403, 'PERMISSION_DENIED'],
  8: [429, 'RESOURCE_EXHAUSTED'],
  9: [400, 'FAILED_PRECONDITION'],
  16: [401, 'UNAUTHENTICATED'],
  14: [503, 'UNAVAILABLE'],
  13: [500, 'INTERNAL'],
};

function normalise(e: unknown): Normalised | undefined {
  const any = e as {
    response?: { status?: number; data?: unknown };
    code?: unknown;
    status?: unknown;
    message?: string;
    details?: unknown;
    statusDetails?: { reason?: string }[];
  };
  const data = any?.response?.data as
    | {
        error?: {
          code?: number;
          message?: string;
          status?: string;
          errors?: { reason?: string; message?: string }[];
          details?: { reason?: string }[];
        };
      }
    | undefined;
  if (
    any?.response &&
    data &&
    typeof data === 'object' &&
    data.error &&
    typeof data.error === 'object'
  ) {
    const err = data.error;
    return {
      httpStatus: any.response.status ?? err.code,
      status: err.status,
      reason: err.errors?.[0]?.reason ?? err.details?.find((d) => d.reason)?.reason,
      message: err.message ?? 'no message',
    };
  }
  if (any?.response?.status)
    return { httpStatus: any.response.status, message: any.message ?? String(e) };
  // A gax GoogleError: a gRPC code number, plus `details`/`statusDetails`.
  if (
    typeof any?.code === 'number' &&
    GRPC_TO_HTTP[any.code] &&
    ('statusDetails' in any || 'details' in any)
  ) {
    const [http, status] = GRPC_TO_HTTP[any.code]!;
    // gax prefixes "7 PERMISSION_DENIED: "; keep Google's own text.
    const text = typeof any.details === 'string' && any.details ? any.details : (any.message ?? '');
    const message = text.replace(/^\d+ [A-Z_]+: /, '');
    const reason =
      (any as { reason?: string }).reason ?? any.statusDetails?.find((d) => d.reason)?.reason;
    return { httpStatus: http, status, reason, message };
  }
  return undefined;
}

/** Turns any error from a Google call into a NestvirtError with a fix. */
export function googleError(e: unknown, ctx: ErrorContext): NestvirtError {
  if (e instanceof NestvirtError) return e;
  const n = normalise(e);
  if (!n) {
    const err = e as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
    const code = err?.code ?? err?.cause?.code;
    if (
      typeof code === 'string' &&
      /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EHOSTUNREACH)$/.test(code)
    )
      return new NotPossibleError(
        'gcp.unreachable',
        `cannot reach the Google API for ${ctx.what}: ${code}`,
        'check network access (proxy, firewall) and retry',
        e,
      );
    return new NestvirtError(
      'gcp.unexpected',
      `unexpected failure for ${ctx.what}: ${(e as Error)?.message ?? String(e)}`,
      {
        exitCode: ExitCode.INTERNAL,
        cause: e,
      },
    );
  }
  return classify(n, ctx, e);
}

function classify(n: Normalised, ctx: ErrorContext, cause: unknown): NestvirtError {
  const msg = n.message.replace(/\s+/g, ' ').trim();
  const project = ctx.project ?? 'PROJECT';
  const mk = (code: string, message: string, hint: string): NestvirtError =>
    new NotPossibleError(code, message, hint, cause);
  if (/constraints\/compute\.disableNestedVirtualization/.test(msg))
    return mk(
      'gcp.policy-denied',
      `${ctx.what}: the org policy forbids nested virtualization (${msg})`,
      `nestvirt gcp policy allow --project ${project}`,
    );
  if (
    n.reason === 'accessNotConfigured' ||
    n.reason === 'SERVICE_DISABLED' ||
    /has not been used in project|is disabled/.test(msg)
  )
    return mk(
      'gcp.api-disabled',
      `${ctx.what}: ${msg}`,
      `gcloud services enable ${ctx.service ?? 'compute.googleapis.com'} --project ${project}`,
    );
  if (n.httpStatus === 401 || n.status === 'UNAUTHENTICATED')
    return mk(
      'gcp.unauthenticated',
      `${ctx.what}: Google rejected the credentials: ${msg}`,
      'run `gcloud auth application-default login`',
    );
  if (
    n.httpStatus === 429 ||
    n.status === 'RESOURCE_EXHAUSTED' ||
    /quota/i.test(n.reason ?? '') ||
    /quota/i.test(msg)
  )
    return mk(
      'gcp.quota',
      `${ctx.what}: quota exceeded: ${msg}`,
      `request more quota (gcloud compute project-info describe --project ${project} shows usage), use a smaller machine type, or another region`,
    );
  if (n.httpStatus === 403 || n.status === 'PERMISSION_DENIED')
    return mk(
      'gcp.permission-denied',
      `${ctx.what}: permission denied: ${msg}`,
      `grant your account ${ctx.role ?? 'the needed role'} on project ${project} (gcloud projects add-iam-policy-binding ${project} --member=user:YOU --role=${ctx.role ?? 'ROLE'})`,
    );
  if (n.httpStatus === 404 || n.status === 'NOT_FOUND')
    return mk(
      'gcp.not-found',
      `${ctx.what} not found: ${msg}`,
      ctx.notFoundFix ?? 'check the project, zone and names',
    );
  if (n.httpStatus === 409 || n.status === 'ALREADY_EXISTS')
    return mk(
      'gcp.already-exists',
      `${ctx.what} already exists: ${msg}`,
      ctx.existsFix ?? 'choose another name',
    );
  if (n.httpStatus === 412 || n.status === 'FAILED_PRECONDITION' || n.reason === 'conditionNotMet')
    return mk('gcp.precondition', `${ctx.what}: ${msg}`, 'fix the condition named above and retry');
  if (n.httpStatus === 400 || n.status === 'INVALID_ARGUMENT') {
    const hint = /machine ?type/i.test(msg)
      ? `list valid types with: gcloud compute machine-types list --zones ${ctx.zone ?? 'ZONE'} --project ${project}`
      : /cpu platform/i.test(msg)
        ? `list the zone's platforms with: gcloud compute zones describe ${ctx.zone ?? 'ZONE'} --format='value(availableCpuPlatforms)'`
        : 'correct the value named above';
    return mk('gcp.invalid', `${ctx.what}: Google rejected the request: ${msg}`, hint);
  }
  return new NestvirtError(
    'gcp.api-error',
    `${ctx.what}: Google API error ${n.httpStatus ?? ''} ${n.status ?? ''}: ${msg}`.replace(
      /\s+/g,
      ' ',
    ),
    {
      hint: 'retry later; if it persists, run with NESTVIRT_DEBUG=1 and report it',
      exitCode: n.httpStatus && n.httpStatus >= 500 ? ExitCode.NOT_POSSIBLE : ExitCode.INTERNAL,
      cause,
    },
  );
}

/** A compute Operation that finished with `error.errors[]`. */
export function operationError(
  op: {
    error?: { errors?: { code?: string | null; message?: string | null }[] } | null;
    httpErrorStatusCode?: number | null;
  },
  ctx: ErrorContext,
): NestvirtError {
  const first = op.error?.errors?.[0];
  const code = first?.code ?? '';
  const message =
    (op.error?.errors ?? [])
      .map((x) => x.message)
      .filter(Boolean)
      .join('; ') ||
    code ||
    'operation failed';
  const statusByCode: Record<string, string> = {
    QUOTA_EXCEEDED: 'RESOURCE_EXHAUSTED',
    ZONE_RESOURCE_POOL_EXHAUSTED: 'RESOURCE_EXHAUSTED',
    RESOURCE_ALREADY_EXISTS: 'ALREADY_EXISTS',
    RESOURCE_NOT_FOUND: 'NOT_FOUND',
    PERMISSIONS_ERROR: 'PERMISSION_DENIED',
    CONDITION_NOT_MET: 'FAILED_PRECONDITION',
  };
  if (code === 'ZONE_RESOURCE_POOL_EXHAUSTED')
    return new NotPossibleError(
      'gcp.zone-exhausted',
      `${ctx.what}: zone ${ctx.zone ?? ''} has no capacity for this machine type right now: ${message}`,
      'try another zone (--zone) or machine type, or retry later',
    );
  return classify(
    {
      httpStatus: op.httpErrorStatusCode ?? undefined,
      status: statusByCode[code],
      reason: code,
      message,
    },
    ctx,
    op,
  );
}
