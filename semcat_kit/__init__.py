"""semcat_kit: categorize products into large category hierarchies, and make mistakes less embarrassing."""
from .taxonomy import Taxonomy

# [datasets]
# [encoders]
# [similarity]
# [metrics]
# [train]
# [viz]
# [export]

__version__ = "0.1.0"
