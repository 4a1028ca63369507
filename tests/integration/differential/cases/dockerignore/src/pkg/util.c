src/pkg/util.c
