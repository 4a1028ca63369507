from casegen import write

write("ünïcödé.txt", "unicode\n")
write("日本語/ファイル.txt", "japanese\n")
write("emoji-😀.txt", "emoji\n")
write("tab\tand-newline\n.txt", "control characters\n")
write("equals=sign@plus+percent%.txt", "punctuation\n")
write("a" * 200 + ".txt", "long name\n")
