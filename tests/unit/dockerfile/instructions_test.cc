#include "engine/dockerfile/instructions.h"

#include <gtest/gtest.h>

namespace kbuild::dockerfile {
namespace {

Dockerfile stages_of(std::string_view text) { return parse_stages(parse_dockerfile(text)); }

const InstructionBody& only_command(std::string_view text) {
  static Dockerfile keep;
  keep = stages_of(text);
  EXPECT_EQ(keep.stages.size(), 1u);
  EXPECT_EQ(keep.stages.at(0).commands.size(), 1u);
  return keep.stages.at(0).commands.at(0).body;
}

std::string error_of(std::string_view text) {
  try {
    stages_of(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Instructions, ArgsBeforeTheFirstFromAreMetaArgs) {
  Dockerfile d = stages_of("ARG A=1 B\nFROM x AS Build\nARG C\n");
  ASSERT_EQ(d.meta_args.size(), 1u);
  auto& meta = std::get<ArgInstruction>(d.meta_args[0].body);
  EXPECT_EQ(meta.args, (std::vector<ArgDefinition>{{"A", "1"}, {"B", std::nullopt}}));
  ASSERT_EQ(d.stages.size(), 1u);
  EXPECT_EQ(d.stages[0].name, "build");  // stage names are lower-cased
  EXPECT_EQ(d.stages[0].base_name, "x");
  EXPECT_EQ(d.stages[0].commands.size(), 1u);
}

TEST(Instructions, InstructionBeforeFromIsRejected) {
  // BuildKit attaches the line to this one but does not prefix it.
  try {
    stages_of("RUN true\nFROM x\n");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "no build stage in current context");
    EXPECT_EQ(e.where()->start_line, 1);
  }
}

TEST(Instructions, UnknownInstructionSuggestsTheClosestOne) {
  EXPECT_EQ(error_of("FROM x\n\nRNU echo\n"), "dockerfile parse error on line 3: unknown instruction: RNU (did you mean RUN?)");
  EXPECT_EQ(error_of("FROM x\nfoo bar\n"), "dockerfile parse error on line 2: unknown instruction: foo (did you mean from?)");
  EXPECT_EQ(error_of("FROM x\nXYZZY bar\n"), "dockerfile parse error on line 2: unknown instruction: XYZZY");
}

TEST(Instructions, ErrorsCarryTheLine) {
  try {
    stages_of("FROM x\nWORKDIR\n");
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "dockerfile parse error on line 2: WORKDIR requires exactly one argument");
    ASSERT_TRUE(e.where());
    EXPECT_EQ(e.where()->start_line, 2);
    EXPECT_EQ(e.kind(), ErrorKind::user);
  }
}

TEST(Instructions, FromValidatesStageNames) {
  EXPECT_EQ(error_of("FROM x AS 1st\n"),
            "dockerfile parse error on line 1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols");
  EXPECT_EQ(error_of("FROM x AS\n"), "dockerfile parse error on line 1: FROM requires either one or three arguments");
  EXPECT_EQ(std::get<FromHeader>(parse_instruction(parse_dockerfile("FROM --platform=linux/arm64 x as y").nodes[0]).body).platform,
            "linux/arm64");
}

TEST(Instructions, CopyTakesItsFlags) {
  auto& copy = std::get<CopyInstruction>(
      only_command("FROM x\nCOPY --from=build --chown=1:2 --chmod=0644 --link --parents --exclude=*.md --exclude=x a b /dst/\n"));
  EXPECT_FALSE(copy.is_add);
  EXPECT_EQ(copy.from, "build");
  EXPECT_EQ(copy.chown, "1:2");
  EXPECT_EQ(copy.chmod, "0644");
  EXPECT_TRUE(copy.link);
  EXPECT_TRUE(copy.parents);
  EXPECT_EQ(copy.excludes, (std::vector<std::string>{"*.md", "x"}));
  EXPECT_EQ(copy.sources, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(copy.dest, "/dst/");
}

TEST(Instructions, AddTakesChecksumUnpackAndKeepGitDir) {
  auto& add = std::get<CopyInstruction>(
      only_command("FROM x\nADD --checksum=sha256:abc --keep-git-dir --unpack=false a.tar /\n"));
  EXPECT_TRUE(add.is_add);
  EXPECT_EQ(add.checksum, "sha256:abc");
  EXPECT_EQ(add.keep_git_dir, true);
  EXPECT_EQ(add.unpack, false);
  auto& plain = std::get<CopyInstruction>(only_command("FROM x\nADD a /\n"));
  EXPECT_FALSE(plain.unpack.has_value());
}

TEST(Instructions, FlagsAreCheckedPerInstruction) {
  EXPECT_EQ(error_of("FROM x\nADD --from=y a b\n"), "dockerfile parse error on line 2: unknown flag: --from");
  EXPECT_EQ(error_of("FROM x\nCOPY --chwon=1 a b\n"), "dockerfile parse error on line 2: unknown flag: --chwon (did you mean chown?)");
  EXPECT_EQ(error_of("FROM x\nCOPY --from=a --from=b a b\n"), "dockerfile parse error on line 2: duplicate flag specified: --from");
  EXPECT_EQ(error_of("FROM x\nCOPY --from a b\n"), "dockerfile parse error on line 2: missing a value on flag: --from");
  EXPECT_EQ(error_of("FROM x\nCOPY --link=maybe a b\n"),
            "dockerfile parse error on line 2: expecting boolean value for flag --link, not: maybe");
  EXPECT_EQ(error_of("FROM x\nENV --x=1 A=b\n"), "dockerfile parse error on line 2: unknown flag: --x");
  EXPECT_EQ(error_of("FROM x\nCOPY a\n"),
            "dockerfile parse error on line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined");
}

TEST(Instructions, CopyHeredocBecomesAnInlineSource) {
  auto& copy = std::get<CopyInstruction>(only_command("FROM x\nCOPY <<EOF /greeting\nhello $NAME\nEOF\n"));
  EXPECT_TRUE(copy.sources.empty());
  ASSERT_EQ(copy.inline_sources.size(), 1u);
  EXPECT_EQ(copy.inline_sources[0].path, "EOF");
  EXPECT_EQ(copy.inline_sources[0].data, "hello $NAME\n");
  EXPECT_TRUE(copy.inline_sources[0].expand);
  EXPECT_EQ(error_of("FROM x\nCOPY a <<EOF\nx\nEOF\n"), "dockerfile parse error on line 2: COPY cannot accept a heredoc as a destination");
}

TEST(Instructions, RunShellFormExecFormAndFlags) {
  auto& shell = std::get<RunInstruction>(only_command("FROM x\nRUN --network=none --security=insecure echo  hi\n"));
  EXPECT_TRUE(shell.command.prepend_shell);
  EXPECT_EQ(shell.command.args, (std::vector<std::string>{"echo  hi"}));
  EXPECT_EQ(shell.network, "none");
  EXPECT_EQ(shell.security, "insecure");
  auto& exec = std::get<RunInstruction>(only_command("FROM x\nRUN [\"echo\", \"hi\"]\n"));
  EXPECT_FALSE(exec.command.prepend_shell);
  EXPECT_EQ(exec.command.args, (std::vector<std::string>{"echo", "hi"}));
  EXPECT_EQ(error_of("FROM x\nRUN --network=bridge true\n"), "dockerfile parse error on line 2: invalid network mode \"bridge\"");
  EXPECT_EQ(error_of("FROM x\nRUN --security=open true\n"), "dockerfile parse error on line 2: security \"open\" is not valid");
}

TEST(Instructions, RunHeredocBecomesAnInlineFile) {
  auto& run = std::get<RunInstruction>(only_command("FROM x\nRUN <<EOT\necho hi\nEOT\n"));
  ASSERT_EQ(run.command.files.size(), 1u);
  EXPECT_EQ(run.command.files[0].name, "EOT");
  EXPECT_EQ(run.command.files[0].data, "echo hi\n");
}

TEST(Instructions, EnvAndLabelKeepPairsInOrder) {
  auto& env = std::get<EnvInstruction>(only_command("FROM x\nENV A=1 B=\"two words\"\n"));
  ASSERT_EQ(env.env.size(), 2u);
  EXPECT_EQ(env.env[0].key, "A");
  EXPECT_EQ(env.env[1].value, "\"two words\"");  // quotes go when the stage expands it
  auto& legacy = std::get<EnvInstruction>(only_command("FROM x\nENV A one two\n"));
  EXPECT_TRUE(legacy.env[0].legacy_form);
  EXPECT_EQ(legacy.env[0].value, "one two");
}

TEST(Instructions, HealthcheckParsesDurationsAndRetries) {
  auto& h = std::get<HealthcheckInstruction>(
      only_command("FROM x\nHEALTHCHECK --interval=5s --timeout=1m --start-period=2s --start-interval=100ms --retries=3 CMD curl -f x\n"));
  EXPECT_EQ(h.test, (std::vector<std::string>{"CMD-SHELL", "curl -f x"}));
  EXPECT_EQ(h.interval_ns, 5'000'000'000);
  EXPECT_EQ(h.timeout_ns, 60'000'000'000);
  EXPECT_EQ(h.start_period_ns, 2'000'000'000);
  EXPECT_EQ(h.start_interval_ns, 100'000'000);
  EXPECT_EQ(h.retries, 3);
  EXPECT_EQ(std::get<HealthcheckInstruction>(only_command("FROM x\nHEALTHCHECK NONE\n")).test,
            (std::vector<std::string>{"NONE"}));
  EXPECT_EQ(std::get<HealthcheckInstruction>(only_command("FROM x\nHEALTHCHECK CMD [\"a\", \"b\"]\n")).test,
            (std::vector<std::string>{"CMD", "a", "b"}));
}

TEST(Instructions, HealthcheckErrorsReadLikeBuildKits) {
  EXPECT_EQ(error_of("FROM x\nHEALTHCHECK NONE x\n"), "dockerfile parse error on line 2: HEALTHCHECK NONE takes no arguments");
  EXPECT_EQ(error_of("FROM x\nHEALTHCHECK PING x\n"), "dockerfile parse error on line 2: Unknown type \"PING\" in HEALTHCHECK (try CMD)");
  EXPECT_EQ(error_of("FROM x\nHEALTHCHECK --interval=1us CMD x\n"),
            "dockerfile parse error on line 2: Interval \"interval\" cannot be less than 1ms");
  EXPECT_EQ(error_of("FROM x\nHEALTHCHECK --retries=-1 CMD x\n"), "dockerfile parse error on line 2: --retries cannot be negative (-1)");
  EXPECT_EQ(error_of("FROM x\nHEALTHCHECK --timeout=5 CMD x\n"),
            "dockerfile parse error on line 2: time: missing unit in duration \"5\"");
}

TEST(Instructions, OnbuildRecordsTheTriggerAndRefusesChains) {
  auto& onbuild = std::get<OnbuildInstruction>(only_command("FROM x\nONBUILD RUN echo hi\n"));
  EXPECT_EQ(onbuild.expression, "RUN echo hi");
  EXPECT_EQ(error_of("FROM x\nONBUILD ONBUILD RUN x\n"),
            "dockerfile parse error on line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  EXPECT_EQ(error_of("FROM x\nONBUILD FROM y\n"), "dockerfile parse error on line 2: FROM isn't allowed as an ONBUILD trigger");
}

TEST(Instructions, ExposeSortsAndVolumeTrims) {
  EXPECT_EQ(std::get<ExposeInstruction>(only_command("FROM x\nEXPOSE 8080 443 80/udp\n")).ports,
            (std::vector<std::string>{"443", "80/udp", "8080"}));
  EXPECT_EQ(std::get<VolumeInstruction>(only_command("FROM x\nVOLUME [\"/a\", \" /b \"]\n")).volumes,
            (std::vector<std::string>{"/a", "/b"}));
  EXPECT_EQ(error_of("FROM x\nVOLUME [\"\"]\n"), "dockerfile parse error on line 2: VOLUME specified can not be an empty string");
}

TEST(Instructions, ShellNeedsJsonForm) {
  EXPECT_EQ(std::get<ShellInstruction>(only_command("FROM x\nSHELL [\"/bin/bash\", \"-c\"]\n")).shell,
            (std::vector<std::string>{"/bin/bash", "-c"}));
  EXPECT_EQ(error_of("FROM x\nSHELL /bin/bash -c\n"), "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form");
}

TEST(Instructions, ArgRejectsBlankNames) {
  EXPECT_EQ(error_of("FROM x\nARG =v\n"), "dockerfile parse error on line 2: ARG names can not be blank");
}

TEST(Instructions, RunMountsAreCheckedAtParseTime) {
  EXPECT_EQ(error_of("FROM x\nRUN --mount=from=$X true\n"),
            "dockerfile parse error on line 2: 'from' doesn't support variable expansion, define alias stage instead");
}

TEST(Instructions, OriginalTextKeepsTheInstructionAsWritten) {
  Dockerfile d = stages_of("FROM x\nRUN echo a \\\n  b\n");
  EXPECT_EQ(d.stages[0].commands[0].keyword, "run");
  EXPECT_EQ(d.stages[0].commands[0].lines.start_line, 2);
  EXPECT_EQ(d.stages[0].commands[0].lines.end_line, 3);
}

TEST(Instructions, ExpansionTouchesOnlyTheFieldsBuildKitExpands) {
  Dockerfile d = stages_of(
      "FROM x\nCOPY --chown=$U --from=$S ${SRC} $DST\nRUN echo $SRC\nWORKDIR $DST\nUSER $U\nEXPOSE $PORTS\n"
      "ENV $K=$SRC\nLABEL l=$U\nSTOPSIGNAL $SIG\nVOLUME $DST\n");
  ShellLexer lexer;
  VariableLookup lookup = [](std::string_view name) -> std::optional<std::string> {
    if (name == "U") return "1000";
    if (name == "SRC") return "src";
    if (name == "DST") return "/dst";
    if (name == "PORTS") return "80 443";
    if (name == "K") return "KEY";
    if (name == "SIG") return "SIGINT";
    return std::nullopt;
  };
  for (Instruction& i : d.stages[0].commands) expand_instruction(i, lexer, lookup);
  auto& c = d.stages[0].commands;
  auto& copy = std::get<CopyInstruction>(c[0].body);
  EXPECT_EQ(copy.chown, "1000");
  EXPECT_EQ(copy.from, "$S");  // --from is never expanded
  EXPECT_EQ(copy.sources, (std::vector<std::string>{"src"}));
  EXPECT_EQ(copy.dest, "/dst");
  EXPECT_EQ(std::get<RunInstruction>(c[1].body).command.args[0], "echo $SRC");  // the shell expands RUN
  EXPECT_EQ(std::get<WorkdirInstruction>(c[2].body).path, "/dst");
  EXPECT_EQ(std::get<UserInstruction>(c[3].body).user, "1000");
  EXPECT_EQ(std::get<ExposeInstruction>(c[4].body).ports, (std::vector<std::string>{"80", "443"}));
  EXPECT_EQ(std::get<EnvInstruction>(c[5].body).env[0].key, "KEY");
  EXPECT_EQ(std::get<EnvInstruction>(c[5].body).env[0].value, "src");
  EXPECT_EQ(std::get<LabelInstruction>(c[6].body).labels[0].value, "1000");
  EXPECT_EQ(std::get<StopSignalInstruction>(c[7].body).signal, "SIGINT");
  EXPECT_EQ(std::get<VolumeInstruction>(c[8].body).volumes, (std::vector<std::string>{"/dst"}));
}

TEST(Instructions, HeredocSourceExpandsUnlessItsDelimiterIsQuoted) {
  Dockerfile d = stages_of("FROM x\nCOPY <<A <<\"B\" /d/\n'$V' \"$V\"\nA\n$V\nB\n");
  ShellLexer lexer;
  VariableLookup lookup = [](std::string_view name) -> std::optional<std::string> {
    if (name == "V") return "v";
    return std::nullopt;
  };
  expand_instruction(d.stages[0].commands[0], lexer, lookup);
  auto& copy = std::get<CopyInstruction>(d.stages[0].commands[0].body);
  ASSERT_EQ(copy.inline_sources.size(), 2u);
  EXPECT_EQ(copy.inline_sources[0].data, "'v' \"v\"\n");  // quotes are data in a here-document
  EXPECT_EQ(copy.inline_sources[1].data, "$V\n");
}

TEST(Instructions, ExpansionErrorsCarryTheLine) {
  Dockerfile d = stages_of("FROM x\n\nUSER ${U:?is required}\n");
  ShellLexer lexer;
  try {
    expand_instruction(d.stages[0].commands[0], lexer, [](std::string_view) { return std::nullopt; });
    FAIL();
  } catch (const Error& e) {
    ASSERT_TRUE(e.where());
    EXPECT_EQ(e.where()->start_line, 3);
  }
}

}  // namespace
}  // namespace kbuild::dockerfile
