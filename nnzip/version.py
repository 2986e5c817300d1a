"""The package version, in its own module so that modules below the package's facade can name it without importing the package."""

__version__ = "0.1.0"
