"""FaceSocial AI: a self-hosted face analysis service.

Importing the package has no side effects: no models are loaded, no
directories are created and no settings are read until a caller asks.
"""

__version__ = "0.1.0"
