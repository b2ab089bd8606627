import sys

from xl.book.cli import main

sys.exit(main())
