/**
 * Connecting to Google: Application Default Credentials and the two official
 * clients nestvirt uses (see docs/gcp.md for why these):
 *  - `@googleapis/compute` (the generated REST client for Compute Engine v1),
 *  - `@google-cloud/org-policy` (Org Policy v2, in its HTTP/JSON `fallback` mode).
 *
 * `NESTVIRT_GCP_ENDPOINT=http://127.0.0.1:PORT` points both clients and the
 * OAuth2 token exchange at one other server. It exists for the test suite's
 * protocol fake and is never needed against Google.
 */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
// Types only: the libraries themselves are loaded in connect(), so that other
// nestvirt commands do not pay for loading them (seconds on a slow machine).
import type { compute_v1 } from '@googleapis/compute';
import type { OrgPolicyClient } from '@google-cloud/org-policy';
import { NotPossibleError, UsageError } from '../../errors.js';
import { googleAuth, googleCompute, googleOrgPolicy } from '../../util/lazy.js';

export const SCOPES = ['https://www.googleapis.com/auth/cloud-platform'];
export const ENDPOINT_ENV = 'NESTVIRT_GCP_ENDPOINT';

/** Both API clients, authorised with the same credentials. */
export interface Gcp {
  compute: compute_v1.Compute;
  orgPolicy: OrgPolicyClient;
  /** Where the credentials came from, for `--json` and messages. */
  credentials: { source: 'env' | 'gcloud' | 'metadata'; file?: string; type?: string };
}

export const NO_CREDENTIALS =
  'no Google credentials: run `gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS';

/**
 * Finds the ADC file the way Google's libraries do: $GOOGLE_APPLICATION_CREDENTIALS,
 * else gcloud's application_default_credentials.json under $CLOUDSDK_CONFIG or
 * ~/.config/gcloud. Undefined when there is none.
 */
export function findCredentialsFile(
  env: NodeJS.ProcessEnv,
): { file: string; source: 'env' | 'gcloud' } | undefined {
  const explicit = env.GOOGLE_APPLICATION_CREDENTIALS;
  if (explicit) {
    if (!existsSync(explicit))
      throw new NotPossibleError(
        'gcp.credentials-missing',
        `GOOGLE_APPLICATION_CREDENTIALS names ${explicit}, which does not exist`,
        'point it at a credentials JSON file, or unset it and run `gcloud auth application-default login`',
      );
    return { file: explicit, source: 'env' };
  }
  const home = env.HOME ?? homedir();
  const dir = env.CLOUDSDK_CONFIG ?? join(home, '.config', 'gcloud');
  const file = join(dir, 'application_default_credentials.json');
  return existsSync(file) ? { file, source: 'gcloud' } : undefined;
}

/** Parses NESTVIRT_GCP_ENDPOINT (tests only) into its parts. */
export function endpointOverride(env: NodeJS.ProcessEnv): URL | undefined {
  const v = env[ENDPOINT_ENV];
  if (!v) return undefined;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new UsageError(
      'gcp.bad-endpoint',
      `${ENDPOINT_ENV} must be a URL like http://127.0.0.1:8080, got ${JSON.stringify(v)}`,
      `unset ${ENDPOINT_ENV}`,
    );
  }
  return u;
}

/**
 * Resolves Application Default Credentials and builds the clients. Throws the
 * one-line "no Google credentials" error when there are none. The metadata
 * server is consulted only when no file exists and METADATA_SERVER_DETECTION
 * is not `none` (the variable Google's libraries honour).
 */
export async function connect(
  env: NodeJS.ProcessEnv,
  opts: { project?: string | undefined } = {},
): Promise<Gcp> {
  const ep = endpointOverride(env);
  const found = findCredentialsFile(env);
  const clientOptions = ep
    ? { endpoints: { oauth2TokenUrl: new URL('/token', ep).toString() } }
    : {};
  let type: string | undefined;
  if (found) {
    try {
      type = (JSON.parse(readFileSync(found.file, 'utf8')) as { type?: string }).type;
    } catch (e) {
      throw new NotPossibleError(
        'gcp.credentials-invalid',
        `credentials file ${found.file} is not valid JSON: ${(e as Error).message}`,
        'run `gcloud auth application-default login` to write a fresh one',
      );
    }
  } else if (env.METADATA_SERVER_DETECTION === 'none') {
    throw new NotPossibleError('gcp.no-credentials', NO_CREDENTIALS);
  }
  // A known project spares google-auth-library its project-id discovery
  // (which runs `gcloud config config-helper` and asks the metadata server).
  const projectId = opts.project ? { projectId: opts.project } : {};
  const { GoogleAuth } = googleAuth();
  const { compute } = googleCompute();
  const { OrgPolicyClient } = googleOrgPolicy();
  const auth = new GoogleAuth({
    scopes: SCOPES,
    ...projectId,
    ...(found ? { keyFilename: found.file } : {}),
    clientOptions,
  });
  try {
    // Fail early, with one line, rather than inside the first API call.
    const client = await auth.getClient();
    await client.getAccessToken();
  } catch (e) {
    throw credentialError(e, found?.file);
  }
  const computeClient = compute({
    version: 'v1',
    // googleapis-common bundles its own google-auth-library; the GoogleAuth
    // object is accepted by duck typing.
    auth: auth as never,
    ...(ep ? { rootUrl: new URL('/', ep).toString() } : {}),
  });
  const orgPolicy = new OrgPolicyClient({
    fallback: true,
    scopes: SCOPES,
    ...projectId,
    ...(found ? { keyFilename: found.file } : {}),
    clientOptions,
    ...(ep
      ? {
          apiEndpoint: ep.hostname,
          port: Number(ep.port || (ep.protocol === 'http:' ? 80 : 443)),
          protocol: ep.protocol.replace(':', ''),
        }
      : {}),
  } as ConstructorParameters<typeof OrgPolicyClient>[0]);
  return {
    compute: computeClient,
    orgPolicy,
    credentials: {
      source: found ? found.source : 'metadata',
      ...(found ? { file: found.file } : {}),
      ...(type ? { type } : {}),
    },
  };
}

function credentialError(e: unknown, file: string | undefined): NotPossibleError {
  const msg = e instanceof Error ? e.message : String(e);
  if (/Could not load the default credentials/i.test(msg))
    return new NotPossibleError('gcp.no-credentials', NO_CREDENTIALS);
  const data = (e as { response?: { data?: { error?: string; error_description?: string } } })
    .response?.data;
  if (
    data?.error === 'invalid_grant' ||
    data?.error === 'invalid_client' ||
    /invalid_grant|invalid_client/.test(msg)
  )
    return new NotPossibleError(
      'gcp.credentials-rejected',
      `Google rejected the credentials${file ? ` in ${file}` : ''}: ${data?.error_description ?? data?.error ?? msg}`,
      'run `gcloud auth application-default login` again',
      e,
    );
  return new NotPossibleError(
    'gcp.credentials-failed',
    `could not get an access token${file ? ` from ${file}` : ''}: ${msg.split('\n')[0]}`,
    'check network access to Google, or run `gcloud auth application-default login`',
    e,
  );
}
