import sys

from stream_migrator.cli import main

sys.exit(main())
