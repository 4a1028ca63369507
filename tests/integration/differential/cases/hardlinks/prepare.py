from casegen import hardlink, write

write("h/original", "shared content\n", 0o640)
hardlink("h/original", "h/second")
hardlink("h/original", "h/sub/third")
write("h/solo", "not linked\n")
write("other/outside-link-source", "linked from inside h\n")
hardlink("other/outside-link-source", "h/linked-from-outside")
