/**
 * The boolean org-policy constraint that gates nesting,
 * `constraints/compute.disableNestedVirtualization`, through Org Policy v2:
 * `policies.get` (what is set on the resource itself), `getEffectivePolicy`
 * (what applies after inheritance), `create`/`patch` to set it.
 */
import type { Gcp } from './api.js';
import { googleError } from './errors.js';
import { UsageError } from '../../errors.js';

export const CONSTRAINT = 'constraints/compute.disableNestedVirtualization';
const SHORT = 'compute.disableNestedVirtualization';

export type ResourceKind = 'projects' | 'folders' | 'organizations';
export interface PolicyTarget {
  kind: ResourceKind;
  id: string;
}

/** Builds the target from exactly one of --project/--folder/--organization. */
export function policyTarget(opts: {
  project?: string | undefined;
  folder?: string | undefined;
  organization?: string | undefined;
}): PolicyTarget {
  const given = (
    [
      ['projects', opts.project],
      ['folders', opts.folder],
      ['organizations', opts.organization],
    ] as const
  ).filter(([, v]) => v);
  if (given.length !== 1)
    throw new UsageError(
      'gcp.policy-target',
      `give exactly one of --project, --folder or --organization (got ${given.length})`,
      'e.g. nestvirt gcp policy get --project my-project',
    );
  const [kind, id] = given[0]!;
  if ((kind === 'folders' || kind === 'organizations') && !/^\d+$/.test(id!))
    throw new UsageError(
      'gcp.policy-target',
      `--${kind === 'folders' ? 'folder' : 'organization'} must be a numeric id, got ${JSON.stringify(id)}`,
      `find it with: gcloud ${kind} list`,
    );
  return { kind, id: id! };
}

export function resourceName(t: PolicyTarget): string {
  return `${t.kind}/${t.id}`;
}
export function policyName(t: PolicyTarget): string {
  return `${resourceName(t)}/policies/${SHORT}`;
}

/** A policy body as Org Policy v2 takes it (what `--dry-run` prints). */
export interface PolicyBody {
  name: string;
  /** `etag` (from policies.get) makes the update a guarded read-modify-write. */
  spec: { rules: { enforce: boolean }[]; etag?: string };
}

/** The body that sets the constraint: allow nesting = enforce false. */
export function policyBody(t: PolicyTarget, enforce: boolean, etag?: string): PolicyBody {
  return { name: policyName(t), spec: { rules: [{ enforce }], ...(etag ? { etag } : {}) } };
}

/** The gcloud command that does the same as `policy allow|deny`. */
export function gcloudPolicyCommand(t: PolicyTarget, enforce: boolean): string {
  const flag =
    t.kind === 'projects' ? '--project' : t.kind === 'folders' ? '--folder' : '--organization';
  return `gcloud resource-manager org-policies ${enforce ? 'enable-enforce' : 'disable-enforce'} ${SHORT} ${flag}=${t.id}`;
}

interface RawPolicy {
  name?: string | null;
  etag?: string | null;
  spec?: {
    etag?: string | null;
    updateTime?: unknown;
    reset?: boolean | null;
    rules?: { enforce?: boolean | null }[] | null;
  } | null;
}

/** Reads `enforce` from a policy; a policy with no boolean rule is not enforced (the default). */
export function enforcedOf(p: RawPolicy | null | undefined): boolean {
  if (!p?.spec || p.spec.reset) return false;
  const rule = (p.spec.rules ?? []).find((r) => typeof r.enforce === 'boolean');
  return rule?.enforce === true;
}

export interface PolicyState {
  resource: string;
  constraint: string;
  /** What is set on this resource itself; null when nothing is (inherits). */
  set: { enforced: boolean; etag: string | null } | null;
  /** What applies after inheritance. */
  effective: { enforced: boolean };
  /** true when nested virtualization is allowed here. */
  nestedAllowed: boolean;
}

function ctxFor(t: PolicyTarget, what: string) {
  return {
    what,
    ...(t.kind === 'projects' ? { project: t.id } : {}),
    role: 'roles/orgpolicy.policyAdmin (to set) or roles/orgpolicy.policyViewer (to read)',
    service: 'orgpolicy.googleapis.com',
    notFoundFix: `check the ${t.kind.replace(/s$/, '')} id ${t.id}`,
  };
}

/** The effective enforcement for a resource. */
export async function effectivePolicy(gcp: Gcp, t: PolicyTarget): Promise<{ enforced: boolean }> {
  try {
    const [p] = await gcp.orgPolicy.getEffectivePolicy({ name: policyName(t) });
    return { enforced: enforcedOf(p as RawPolicy) };
  } catch (e) {
    throw googleError(e, ctxFor(t, `effective org policy ${CONSTRAINT} on ${resourceName(t)}`));
  }
}

/** The policy set on the resource itself, or null. */
async function ownPolicy(gcp: Gcp, t: PolicyTarget): Promise<RawPolicy | null> {
  try {
    const [p] = await gcp.orgPolicy.getPolicy({ name: policyName(t) });
    return p as RawPolicy;
  } catch (e) {
    if ((e as { code?: number }).code === 5) return null; // NOT_FOUND: nothing set here
    throw googleError(e, ctxFor(t, `org policy ${CONSTRAINT} on ${resourceName(t)}`));
  }
}

/** `policy get`. */
export async function getPolicyState(gcp: Gcp, t: PolicyTarget): Promise<PolicyState> {
  const own = await ownPolicy(gcp, t);
  const effective = await effectivePolicy(gcp, t);
  return {
    resource: resourceName(t),
    constraint: CONSTRAINT,
    set: own ? { enforced: enforcedOf(own), etag: own.spec?.etag || own.etag || null } : null,
    effective,
    nestedAllowed: !effective.enforced,
  };
}

/** `policy allow|deny`: creates or updates the resource's own policy, then re-reads. */
export async function setPolicy(
  gcp: Gcp,
  t: PolicyTarget,
  enforce: boolean,
): Promise<PolicyState & { changed: boolean }> {
  const own = await ownPolicy(gcp, t);
  let changed = true;
  if (own && enforcedOf(own) === enforce && own.spec?.rules?.length) {
    changed = false;
  } else {
    try {
      const etag = own?.spec?.etag ?? own?.etag ?? undefined;
      if (own) await gcp.orgPolicy.updatePolicy({ policy: policyBody(t, enforce, etag) });
      else
        await gcp.orgPolicy.createPolicy({
          parent: resourceName(t),
          policy: policyBody(t, enforce),
        });
    } catch (e) {
      throw googleError(e, {
        ...ctxFor(t, `setting org policy ${CONSTRAINT} on ${resourceName(t)}`),
        role: 'roles/orgpolicy.policyAdmin',
      });
    }
  }
  return { ...(await getPolicyState(gcp, t)), changed };
}
