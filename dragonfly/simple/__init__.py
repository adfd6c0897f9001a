"""Simple mode: agentless installs with each distribution's own network installer, driven by
an answer file Dragonfly generates (preseed, autoinstall, kickstart) from one description of
the install, and followed through the installer's own progress reports."""
