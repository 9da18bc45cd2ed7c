/**
 * The command registry: one line per top-level command. Each command lives
 * in its own thin file under src/cli/.
 */
import type { Command } from './command.js';
import { versionCommand } from './version.js';
import { doctorCommand } from './doctor.js';
import { runCommand } from './run.js';
import { lsCommand } from './ls.js';
import { infoCommand } from './info.js';
import { startCommand } from './start.js';
import { stopCommand } from './stop.js';
import { killCommand } from './kill.js';
import { restartCommand } from './restart.js';
import { rmCommand } from './rm.js';
import { consoleCommand } from './console.js';
import { logsCommand } from './logs.js';
import { execCommand } from './exec.js';
import { imageCommand } from './image.js';
import { sshCommand } from './ssh.js';

export const commands: Command[] = [
  versionCommand,
  doctorCommand,
  runCommand,
  lsCommand,
  infoCommand,
  startCommand,
  stopCommand,
  killCommand,
  restartCommand,
  rmCommand,
  consoleCommand,
  logsCommand,
  execCommand,
  imageCommand,
  sshCommand,
];
