"""Stand-in on the device machine (the real wheel is over the transfer limit): imports pass, any use fails."""


def __getattr__(name):
    raise ImportError(f"SimpleITK.{name}: SimpleITK is not installed on the device machine")
