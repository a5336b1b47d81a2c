import sys

from evalkit.cli.app import main

sys.exit(main())
