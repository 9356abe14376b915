"""llmrec_lab: the library every chapter of the llmrec-lab course imports."""
from llmrec_lab.config import Profile, get_profile, pick_device, pick_dtype, seed_everything

__version__ = "0.1.0"
__all__ = ["Profile", "get_profile", "pick_device", "pick_dtype", "seed_everything", "__version__"]
