"""CityEdge edge gateway agent: field buses to the city platform."""

__version__ = "0.1.0"
