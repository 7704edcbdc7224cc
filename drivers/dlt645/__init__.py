"""DL/T 645-2007: the Chinese national protocol for reading electricity meters on RS-485."""
