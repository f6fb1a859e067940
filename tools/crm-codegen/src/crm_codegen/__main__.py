"""``python -m crm_codegen``: regenerate, check (``--check``) or lock (``--update-lock``)."""

import sys

from crm_codegen import main

sys.exit(main())
