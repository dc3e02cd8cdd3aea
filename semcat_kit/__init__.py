"""semcat_kit: categorize products into large category hierarchies, and make mistakes less embarrassing."""
from .taxonomy import Taxonomy

__version__ = "0.1.0"
__all__ = ["Taxonomy", "__version__"]
