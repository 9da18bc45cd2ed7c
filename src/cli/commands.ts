/**
 * The command registry: one line per top-level command. Each command lives
 * in its own thin file under src/cli/.
 */
import type { Command } from './command.js';
import { versionCommand } from './version.js';
import { libvirtCommand } from './libvirt.js';
import { imageCommand } from './image.js';
import { doctorCommand } from './doctor.js';

export const commands: Command[] = [
  versionCommand,
  doctorCommand,
  libvirtCommand,
  imageCommand,
];
