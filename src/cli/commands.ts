/**
 * The command registry: one line per top-level command. Each command lives
 * in its own thin file under src/cli/.
 */
import type { Command } from './command.js';
import { versionCommand } from './version.js';
import { doctorCommand } from './doctor.js';
import { enableCommand } from './enable.js';
import { disableCommand } from './disable.js';
import { imageCommand } from './image.js';

export const commands: Command[] = [
  versionCommand,
  doctorCommand,
  enableCommand,
  disableCommand,
  imageCommand,
];
