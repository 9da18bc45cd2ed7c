/**
 * Test set-up for the gcp tests: the protocol fake with a small world, an
 * authorized_user credentials file for it, and the environment that points
 * nestvirt at the fake (and never at Google or the metadata server).
 */
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeGcp, type FakeGcp, type FakeConfig } from '../../fakes/gcp-server.js';

export const OAUTH = {
  clientId: 'fake-client.apps.example',
  clientSecret: 'fake-secret',
  refreshToken: 'fake-refresh-token',
};

export const ZONES: FakeConfig['zones'] = {
  // Like us-central1-a: every Intel generation, AMD, Arm.
  'us-central1-a': [
    'Intel Sandy Bridge',
    'Intel Ivy Bridge',
    'Intel Haswell',
    'Intel Broadwell',
    'Intel Skylake',
    'Intel Cascade Lake',
    'Intel Ice Lake',
    'Intel Sapphire Rapids',
    'AMD Rome',
    'AMD Milan',
    'Ampere Altra',
  ],
  // A zone whose N1 hosts are all pre-Haswell.
  'old-zone1-a': ['Intel Sandy Bridge', 'Intel Ivy Bridge', 'AMD Rome'],
};

export interface World {
  fake: FakeGcp;
  dir: string;
  env: NodeJS.ProcessEnv;
  close(): Promise<void>;
}

/** Starts the fake and writes credentials; env has GOOGLE_APPLICATION_CREDENTIALS and NESTVIRT_GCP_ENDPOINT. */
export async function world(extra: Partial<FakeConfig> = {}): Promise<World> {
  const fake = await startFakeGcp({
    projects: {
      'proj-ok': 'folders/200',
      'proj-denied': 'folders/300',
      'proj-ro': 'organizations/100',
      ...(extra.projects ?? {}),
    },
    folders: { '200': 'organizations/100', '300': 'organizations/100', ...(extra.folders ?? {}) },
    zones: { ...ZONES, ...(extra.zones ?? {}) },
    oauth: OAUTH,
    policyReadOnly: ['proj-ro'],
  });
  fake.setPolicy('folders/300', true);
  const dir = await mkdtemp(join(tmpdir(), 'nestvirt-gcp-'));
  const creds = join(dir, 'adc.json');
  await writeFile(
    creds,
    JSON.stringify({
      type: 'authorized_user',
      client_id: OAUTH.clientId,
      client_secret: OAUTH.clientSecret,
      refresh_token: OAUTH.refreshToken,
      token_uri: `${fake.url}/token`,
    }),
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    GOOGLE_APPLICATION_CREDENTIALS: creds,
    NESTVIRT_GCP_ENDPOINT: fake.url,
    NESTVIRT_GCP_POLL_MS: '5',
    METADATA_SERVER_DETECTION: 'none',
    NO_COLOR: '1',
  };
  return {
    fake,
    dir,
    env,
    async close() {
      await fake.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
