from selfalign.cli import main

raise SystemExit(main())
