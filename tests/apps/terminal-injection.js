'use strict';
// Hostile output: escape sequences a terminal would obey if they reached it raw. OSC 0 sets
// the window title, OSC 52 writes the clipboard, OSC 8 makes a hyperlink, CSI clears the
// screen and colours, BEL rings, U+202E reverses what follows. The app's name (given at
// `pm2 start --name`) carries a U+202E too. pm2-trace must show all of it, never obey it.
const lines = [
  '\x1b]0;PWNED\x07title',
  '\x1b]52;c;cHduZWQ=\x07clipboard',
  '\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\link',
  '\x1b[2J\x1b[31mred\x1b[0m csi',
  'bell\x07\x07',
  'invoice\u202Etxt.exe override',
];
function burst() {
  for (const l of lines) console.log(l);
  console.error('\x1b]0;PWNED-ERR\x07stderr');
}
burst();
const t = setInterval(burst, 300);
process.on('SIGINT', () => { clearInterval(t); process.exit(0); });
process.on('SIGTERM', () => { clearInterval(t); process.exit(0); });
