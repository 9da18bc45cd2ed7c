/**
 * `gcp image`: the legacy way to turn nesting on — an image carrying the
 * `enable-vmx` licence, made from a disk or from another image
 * (images.insert with `licenses`, then the global operation).
 */
import type { compute_v1 } from '@googleapis/compute';
import type { Gcp } from './api.js';
import { googleError, type ErrorContext } from './errors.js';
import { waitOperation, VMX_LICENSE } from './instance.js';
import { UsageError, NotPossibleError } from '../../errors.js';
import { shellQuote } from '../../util/exec.js';

/** The licence as a full URL, the form the API returns and gcloud's docs use. */
export const VMX_LICENSE_URL = `https://www.googleapis.com/compute/v1/${VMX_LICENSE}`;

export interface ImageOptions {
  name: string;
  project: string;
  sourceDisk?: string | undefined;
  zone?: string | undefined;
  imageFamily?: string | undefined;
  imageProject?: string | undefined;
  /** Family to put the new image in, if any. */
  family?: string | undefined;
}

/** Validates the source choice; each problem is one UsageError. */
export function validateImage(o: ImageOptions): void {
  if (!/^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/.test(o.name))
    throw new UsageError(
      'gcp.bad-name',
      `image name ${JSON.stringify(o.name)} is not valid: lower-case letters, digits and hyphens, starting with a letter`,
      'e.g. debian-12-vmx',
    );
  const fromDisk = !!o.sourceDisk;
  const fromFamily = !!(o.imageFamily || o.imageProject);
  if (fromDisk === fromFamily)
    throw new UsageError(
      'gcp.image-source',
      'give either --source-disk DISK (with --zone) or --image-family F --image-project P',
      'e.g. nestvirt gcp image debian-12-vmx --image-family debian-12 --image-project debian-cloud --project P',
    );
  if (fromDisk && !o.zone && !o.sourceDisk!.includes('/'))
    throw new UsageError(
      'gcp.image-zone',
      "--source-disk needs --zone (the disk's zone)",
      'add --zone ZONE',
    );
  if (fromFamily && !(o.imageFamily && o.imageProject))
    throw new UsageError(
      'gcp.image-source',
      '--image-family and --image-project go together',
      'e.g. --image-family debian-12 --image-project debian-cloud',
    );
}

function diskPath(o: ImageOptions): string {
  return o.sourceDisk!.includes('/')
    ? o.sourceDisk!
    : `projects/${o.project}/zones/${o.zone}/disks/${o.sourceDisk}`;
}

/** The images.insert body; `sourceImage` is the resolved family image for the family flow. */
export function imageBody(o: ImageOptions, sourceImage?: string): compute_v1.Schema$Image {
  return {
    name: o.name,
    ...(o.sourceDisk
      ? { sourceDisk: diskPath(o) }
      : {
          sourceImage:
            sourceImage ?? `projects/${o.imageProject}/global/images/family/${o.imageFamily}`,
        }),
    licenses: [VMX_LICENSE_URL],
    ...(o.family ? { family: o.family } : {}),
    labels: { 'nestvirt-role': 'vmx-image' },
  };
}

/** The equivalent gcloud command. */
export function gcloudImageCommand(o: ImageOptions): string {
  return shellQuote([
    'gcloud',
    'compute',
    'images',
    'create',
    o.name,
    `--project=${o.project}`,
    ...(o.sourceDisk
      ? [`--source-disk=${o.sourceDisk}`, ...(o.zone ? [`--source-disk-zone=${o.zone}`] : [])]
      : [`--source-image-family=${o.imageFamily}`, `--source-image-project=${o.imageProject}`]),
    `--licenses=${VMX_LICENSE_URL}`,
    ...(o.family ? [`--family=${o.family}`] : []),
  ]);
}

/** Resolves the family (images.getFromFamily) to the image it points at now. */
export async function resolveFamily(gcp: Gcp, o: ImageOptions): Promise<compute_v1.Schema$Image> {
  try {
    return (
      await gcp.compute.images.getFromFamily({ project: o.imageProject!, family: o.imageFamily! })
    ).data;
  } catch (e) {
    throw googleError(e, {
      what: `image family ${o.imageProject}/${o.imageFamily}`,
      project: o.project,
      role: 'roles/compute.imageUser',
      notFoundFix: `list families with: gcloud compute images list --project ${o.imageProject}`,
    });
  }
}

export interface ImageResult {
  name: string;
  selfLink: string | null;
  status: string | null;
  licenses: string[];
  source: string;
  operation: string | null;
}

/** Creates the licensed image and checks that the licence is on it. */
export async function createImage(
  gcp: Gcp,
  o: ImageOptions,
  body: compute_v1.Schema$Image,
  update: (d: string) => void,
  timeoutMs: number,
  pollMs = 1000,
): Promise<ImageResult> {
  const ctx: ErrorContext = {
    what: `image ${o.name}`,
    project: o.project,
    role: 'roles/compute.storageAdmin',
    existsFix: `choose another name, or delete it: gcloud compute images delete ${o.name} --project ${o.project}`,
    notFoundFix: o.sourceDisk
      ? `check the disk: gcloud compute disks list --project ${o.project}`
      : 'check --image-family/--image-project',
  };
  let op: compute_v1.Schema$Operation;
  try {
    op = (await gcp.compute.images.insert({ project: o.project, requestBody: body })).data;
  } catch (e) {
    throw googleError(e, ctx);
  }
  const done = await waitOperation(gcp, op, { project: o.project }, ctx, update, timeoutMs, pollMs);
  let img: compute_v1.Schema$Image;
  try {
    img = (await gcp.compute.images.get({ project: o.project, image: o.name })).data;
  } catch (e) {
    throw googleError(e, ctx);
  }
  const licenses = img.licenses ?? [];
  if (!licenses.some((l) => l.endsWith(VMX_LICENSE)))
    throw new NotPossibleError(
      'gcp.image-unlicensed',
      `image ${o.name} was created without the ${VMX_LICENSE} licence (has: ${licenses.join(', ') || 'none'})`,
      'use an instance with --enable-nested-virtualization instead: nestvirt gcp create (without --legacy-license)',
    );
  return {
    name: img.name ?? o.name,
    selfLink: img.selfLink ?? null,
    status: img.status ?? null,
    licenses,
    source: body.sourceDisk ?? body.sourceImage ?? '',
    operation: done.name ?? null,
  };
}
