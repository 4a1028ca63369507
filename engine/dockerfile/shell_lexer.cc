#include "engine/dockerfile/shell_lexer.h"

#include <algorithm>
#include <iterator>
#include <string>
#include <utility>

#include "common/error.h"
#include "common/go_text.h"

// A re-implementation of BuildKit's frontend/dockerfile/shell (lex.go). Its quirks are kept on
// purpose, since a Dockerfile must expand the same way under kbuild as under `docker build`; each
// is marked "BuildKit:" where it differs from what a POSIX shell would do.

namespace kbuild::dockerfile {
namespace {

// A Unicode code point, or kEof; Go's rune as read by text/scanner.
using Rune = char32_t;
constexpr Rune kEof = 0xFFFFFFFF;
constexpr Rune kByteOrderMark = 0xFEFF;

// ---- Unicode classes, as Go's unicode.IsLetter, IsDigit and IsSpace ----

struct RuneRange {
  Rune lo;
  Rune hi;
};

// Code points above U+007F in categories Lu Ll Lt Lm Lo (letters) and Nd (decimal digits) of
// Unicode 15.0, the version of Go's unicode package that BuildKit is built with.
constexpr RuneRange kLetters[] = {
    {0xAA, 0xAA}, {0xB5, 0xB5}, {0xBA, 0xBA}, {0xC0, 0xD6}, {0xD8, 0xF6}, {0xF8, 0x2C1}, {0x2C6, 0x2D1},
    {0x2E0, 0x2E4}, {0x2EC, 0x2EC}, {0x2EE, 0x2EE}, {0x370, 0x374}, {0x376, 0x377}, {0x37A, 0x37D},
    {0x37F, 0x37F}, {0x386, 0x386}, {0x388, 0x38A}, {0x38C, 0x38C}, {0x38E, 0x3A1}, {0x3A3, 0x3F5},
    {0x3F7, 0x481}, {0x48A, 0x52F}, {0x531, 0x556}, {0x559, 0x559}, {0x560, 0x588}, {0x5D0, 0x5EA},
    {0x5EF, 0x5F2}, {0x620, 0x64A}, {0x66E, 0x66F}, {0x671, 0x6D3}, {0x6D5, 0x6D5}, {0x6E5, 0x6E6},
    {0x6EE, 0x6EF}, {0x6FA, 0x6FC}, {0x6FF, 0x6FF}, {0x710, 0x710}, {0x712, 0x72F}, {0x74D, 0x7A5},
    {0x7B1, 0x7B1}, {0x7CA, 0x7EA}, {0x7F4, 0x7F5}, {0x7FA, 0x7FA}, {0x800, 0x815}, {0x81A, 0x81A},
    {0x824, 0x824}, {0x828, 0x828}, {0x840, 0x858}, {0x860, 0x86A}, {0x870, 0x887}, {0x889, 0x88E},
    {0x8A0, 0x8C9}, {0x904, 0x939}, {0x93D, 0x93D}, {0x950, 0x950}, {0x958, 0x961}, {0x971, 0x980},
    {0x985, 0x98C}, {0x98F, 0x990}, {0x993, 0x9A8}, {0x9AA, 0x9B0}, {0x9B2, 0x9B2}, {0x9B6, 0x9B9},
    {0x9BD, 0x9BD}, {0x9CE, 0x9CE}, {0x9DC, 0x9DD}, {0x9DF, 0x9E1}, {0x9F0, 0x9F1}, {0x9FC, 0x9FC},
    {0xA05, 0xA0A}, {0xA0F, 0xA10}, {0xA13, 0xA28}, {0xA2A, 0xA30}, {0xA32, 0xA33}, {0xA35, 0xA36},
    {0xA38, 0xA39}, {0xA59, 0xA5C}, {0xA5E, 0xA5E}, {0xA72, 0xA74}, {0xA85, 0xA8D}, {0xA8F, 0xA91},
    {0xA93, 0xAA8}, {0xAAA, 0xAB0}, {0xAB2, 0xAB3}, {0xAB5, 0xAB9}, {0xABD, 0xABD}, {0xAD0, 0xAD0},
    {0xAE0, 0xAE1}, {0xAF9, 0xAF9}, {0xB05, 0xB0C}, {0xB0F, 0xB10}, {0xB13, 0xB28}, {0xB2A, 0xB30},
    {0xB32, 0xB33}, {0xB35, 0xB39}, {0xB3D, 0xB3D}, {0xB5C, 0xB5D}, {0xB5F, 0xB61}, {0xB71, 0xB71},
    {0xB83, 0xB83}, {0xB85, 0xB8A}, {0xB8E, 0xB90}, {0xB92, 0xB95}, {0xB99, 0xB9A}, {0xB9C, 0xB9C},
    {0xB9E, 0xB9F}, {0xBA3, 0xBA4}, {0xBA8, 0xBAA}, {0xBAE, 0xBB9}, {0xBD0, 0xBD0}, {0xC05, 0xC0C},
    {0xC0E, 0xC10}, {0xC12, 0xC28}, {0xC2A, 0xC39}, {0xC3D, 0xC3D}, {0xC58, 0xC5A}, {0xC5D, 0xC5D},
    {0xC60, 0xC61}, {0xC80, 0xC80}, {0xC85, 0xC8C}, {0xC8E, 0xC90}, {0xC92, 0xCA8}, {0xCAA, 0xCB3},
    {0xCB5, 0xCB9}, {0xCBD, 0xCBD}, {0xCDD, 0xCDE}, {0xCE0, 0xCE1}, {0xCF1, 0xCF2}, {0xD04, 0xD0C},
    {0xD0E, 0xD10}, {0xD12, 0xD3A}, {0xD3D, 0xD3D}, {0xD4E, 0xD4E}, {0xD54, 0xD56}, {0xD5F, 0xD61},
    {0xD7A, 0xD7F}, {0xD85, 0xD96}, {0xD9A, 0xDB1}, {0xDB3, 0xDBB}, {0xDBD, 0xDBD}, {0xDC0, 0xDC6},
    {0xE01, 0xE30}, {0xE32, 0xE33}, {0xE40, 0xE46}, {0xE81, 0xE82}, {0xE84, 0xE84}, {0xE86, 0xE8A},
    {0xE8C, 0xEA3}, {0xEA5, 0xEA5}, {0xEA7, 0xEB0}, {0xEB2, 0xEB3}, {0xEBD, 0xEBD}, {0xEC0, 0xEC4},
    {0xEC6, 0xEC6}, {0xEDC, 0xEDF}, {0xF00, 0xF00}, {0xF40, 0xF47}, {0xF49, 0xF6C}, {0xF88, 0xF8C},
    {0x1000, 0x102A}, {0x103F, 0x103F}, {0x1050, 0x1055}, {0x105A, 0x105D}, {0x1061, 0x1061},
    {0x1065, 0x1066}, {0x106E, 0x1070}, {0x1075, 0x1081}, {0x108E, 0x108E}, {0x10A0, 0x10C5},
    {0x10C7, 0x10C7}, {0x10CD, 0x10CD}, {0x10D0, 0x10FA}, {0x10FC, 0x1248}, {0x124A, 0x124D},
    {0x1250, 0x1256}, {0x1258, 0x1258}, {0x125A, 0x125D}, {0x1260, 0x1288}, {0x128A, 0x128D},
    {0x1290, 0x12B0}, {0x12B2, 0x12B5}, {0x12B8, 0x12BE}, {0x12C0, 0x12C0}, {0x12C2, 0x12C5},
    {0x12C8, 0x12D6}, {0x12D8, 0x1310}, {0x1312, 0x1315}, {0x1318, 0x135A}, {0x1380, 0x138F},
    {0x13A0, 0x13F5}, {0x13F8, 0x13FD}, {0x1401, 0x166C}, {0x166F, 0x167F}, {0x1681, 0x169A},
    {0x16A0, 0x16EA}, {0x16F1, 0x16F8}, {0x1700, 0x1711}, {0x171F, 0x1731}, {0x1740, 0x1751},
    {0x1760, 0x176C}, {0x176E, 0x1770}, {0x1780, 0x17B3}, {0x17D7, 0x17D7}, {0x17DC, 0x17DC},
    {0x1820, 0x1878}, {0x1880, 0x1884}, {0x1887, 0x18A8}, {0x18AA, 0x18AA}, {0x18B0, 0x18F5},
    {0x1900, 0x191E}, {0x1950, 0x196D}, {0x1970, 0x1974}, {0x1980, 0x19AB}, {0x19B0, 0x19C9},
    {0x1A00, 0x1A16}, {0x1A20, 0x1A54}, {0x1AA7, 0x1AA7}, {0x1B05, 0x1B33}, {0x1B45, 0x1B4C},
    {0x1B83, 0x1BA0}, {0x1BAE, 0x1BAF}, {0x1BBA, 0x1BE5}, {0x1C00, 0x1C23}, {0x1C4D, 0x1C4F},
    {0x1C5A, 0x1C7D}, {0x1C80, 0x1C88}, {0x1C90, 0x1CBA}, {0x1CBD, 0x1CBF}, {0x1CE9, 0x1CEC},
    {0x1CEE, 0x1CF3}, {0x1CF5, 0x1CF6}, {0x1CFA, 0x1CFA}, {0x1D00, 0x1DBF}, {0x1E00, 0x1F15},
    {0x1F18, 0x1F1D}, {0x1F20, 0x1F45}, {0x1F48, 0x1F4D}, {0x1F50, 0x1F57}, {0x1F59, 0x1F59},
    {0x1F5B, 0x1F5B}, {0x1F5D, 0x1F5D}, {0x1F5F, 0x1F7D}, {0x1F80, 0x1FB4}, {0x1FB6, 0x1FBC},
    {0x1FBE, 0x1FBE}, {0x1FC2, 0x1FC4}, {0x1FC6, 0x1FCC}, {0x1FD0, 0x1FD3}, {0x1FD6, 0x1FDB},
    {0x1FE0, 0x1FEC}, {0x1FF2, 0x1FF4}, {0x1FF6, 0x1FFC}, {0x2071, 0x2071}, {0x207F, 0x207F},
    {0x2090, 0x209C}, {0x2102, 0x2102}, {0x2107, 0x2107}, {0x210A, 0x2113}, {0x2115, 0x2115},
    {0x2119, 0x211D}, {0x2124, 0x2124}, {0x2126, 0x2126}, {0x2128, 0x2128}, {0x212A, 0x212D},
    {0x212F, 0x2139}, {0x213C, 0x213F}, {0x2145, 0x2149}, {0x214E, 0x214E}, {0x2183, 0x2184},
    {0x2C00, 0x2CE4}, {0x2CEB, 0x2CEE}, {0x2CF2, 0x2CF3}, {0x2D00, 0x2D25}, {0x2D27, 0x2D27},
    {0x2D2D, 0x2D2D}, {0x2D30, 0x2D67}, {0x2D6F, 0x2D6F}, {0x2D80, 0x2D96}, {0x2DA0, 0x2DA6},
    {0x2DA8, 0x2DAE}, {0x2DB0, 0x2DB6}, {0x2DB8, 0x2DBE}, {0x2DC0, 0x2DC6}, {0x2DC8, 0x2DCE},
    {0x2DD0, 0x2DD6}, {0x2DD8, 0x2DDE}, {0x2E2F, 0x2E2F}, {0x3005, 0x3006}, {0x3031, 0x3035},
    {0x303B, 0x303C}, {0x3041, 0x3096}, {0x309D, 0x309F}, {0x30A1, 0x30FA}, {0x30FC, 0x30FF},
    {0x3105, 0x312F}, {0x3131, 0x318E}, {0x31A0, 0x31BF}, {0x31F0, 0x31FF}, {0x3400, 0x4DBF},
    {0x4E00, 0xA48C}, {0xA4D0, 0xA4FD}, {0xA500, 0xA60C}, {0xA610, 0xA61F}, {0xA62A, 0xA62B},
    {0xA640, 0xA66E}, {0xA67F, 0xA69D}, {0xA6A0, 0xA6E5}, {0xA717, 0xA71F}, {0xA722, 0xA788},
    {0xA78B, 0xA7CA}, {0xA7D0, 0xA7D1}, {0xA7D3, 0xA7D3}, {0xA7D5, 0xA7D9}, {0xA7F2, 0xA801},
    {0xA803, 0xA805}, {0xA807, 0xA80A}, {0xA80C, 0xA822}, {0xA840, 0xA873}, {0xA882, 0xA8B3},
    {0xA8F2, 0xA8F7}, {0xA8FB, 0xA8FB}, {0xA8FD, 0xA8FE}, {0xA90A, 0xA925}, {0xA930, 0xA946},
    {0xA960, 0xA97C}, {0xA984, 0xA9B2}, {0xA9CF, 0xA9CF}, {0xA9E0, 0xA9E4}, {0xA9E6, 0xA9EF},
    {0xA9FA, 0xA9FE}, {0xAA00, 0xAA28}, {0xAA40, 0xAA42}, {0xAA44, 0xAA4B}, {0xAA60, 0xAA76},
    {0xAA7A, 0xAA7A}, {0xAA7E, 0xAAAF}, {0xAAB1, 0xAAB1}, {0xAAB5, 0xAAB6}, {0xAAB9, 0xAABD},
    {0xAAC0, 0xAAC0}, {0xAAC2, 0xAAC2}, {0xAADB, 0xAADD}, {0xAAE0, 0xAAEA}, {0xAAF2, 0xAAF4},
    {0xAB01, 0xAB06}, {0xAB09, 0xAB0E}, {0xAB11, 0xAB16}, {0xAB20, 0xAB26}, {0xAB28, 0xAB2E},
    {0xAB30, 0xAB5A}, {0xAB5C, 0xAB69}, {0xAB70, 0xABE2}, {0xAC00, 0xD7A3}, {0xD7B0, 0xD7C6},
    {0xD7CB, 0xD7FB}, {0xF900, 0xFA6D}, {0xFA70, 0xFAD9}, {0xFB00, 0xFB06}, {0xFB13, 0xFB17},
    {0xFB1D, 0xFB1D}, {0xFB1F, 0xFB28}, {0xFB2A, 0xFB36}, {0xFB38, 0xFB3C}, {0xFB3E, 0xFB3E},
    {0xFB40, 0xFB41}, {0xFB43, 0xFB44}, {0xFB46, 0xFBB1}, {0xFBD3, 0xFD3D}, {0xFD50, 0xFD8F},
    {0xFD92, 0xFDC7}, {0xFDF0, 0xFDFB}, {0xFE70, 0xFE74}, {0xFE76, 0xFEFC}, {0xFF21, 0xFF3A},
    {0xFF41, 0xFF5A}, {0xFF66, 0xFFBE}, {0xFFC2, 0xFFC7}, {0xFFCA, 0xFFCF}, {0xFFD2, 0xFFD7},
    {0xFFDA, 0xFFDC}, {0x10000, 0x1000B}, {0x1000D, 0x10026}, {0x10028, 0x1003A}, {0x1003C, 0x1003D},
    {0x1003F, 0x1004D}, {0x10050, 0x1005D}, {0x10080, 0x100FA}, {0x10280, 0x1029C}, {0x102A0, 0x102D0},
    {0x10300, 0x1031F}, {0x1032D, 0x10340}, {0x10342, 0x10349}, {0x10350, 0x10375}, {0x10380, 0x1039D},
    {0x103A0, 0x103C3}, {0x103C8, 0x103CF}, {0x10400, 0x1049D}, {0x104B0, 0x104D3}, {0x104D8, 0x104FB},
    {0x10500, 0x10527}, {0x10530, 0x10563}, {0x10570, 0x1057A}, {0x1057C, 0x1058A}, {0x1058C, 0x10592},
    {0x10594, 0x10595}, {0x10597, 0x105A1}, {0x105A3, 0x105B1}, {0x105B3, 0x105B9}, {0x105BB, 0x105BC},
    {0x10600, 0x10736}, {0x10740, 0x10755}, {0x10760, 0x10767}, {0x10780, 0x10785}, {0x10787, 0x107B0},
    {0x107B2, 0x107BA}, {0x10800, 0x10805}, {0x10808, 0x10808}, {0x1080A, 0x10835}, {0x10837, 0x10838},
    {0x1083C, 0x1083C}, {0x1083F, 0x10855}, {0x10860, 0x10876}, {0x10880, 0x1089E}, {0x108E0, 0x108F2},
    {0x108F4, 0x108F5}, {0x10900, 0x10915}, {0x10920, 0x10939}, {0x10980, 0x109B7}, {0x109BE, 0x109BF},
    {0x10A00, 0x10A00}, {0x10A10, 0x10A13}, {0x10A15, 0x10A17}, {0x10A19, 0x10A35}, {0x10A60, 0x10A7C},
    {0x10A80, 0x10A9C}, {0x10AC0, 0x10AC7}, {0x10AC9, 0x10AE4}, {0x10B00, 0x10B35}, {0x10B40, 0x10B55},
    {0x10B60, 0x10B72}, {0x10B80, 0x10B91}, {0x10C00, 0x10C48}, {0x10C80, 0x10CB2}, {0x10CC0, 0x10CF2},
    {0x10D00, 0x10D23}, {0x10E80, 0x10EA9}, {0x10EB0, 0x10EB1}, {0x10F00, 0x10F1C}, {0x10F27, 0x10F27},
    {0x10F30, 0x10F45}, {0x10F70, 0x10F81}, {0x10FB0, 0x10FC4}, {0x10FE0, 0x10FF6}, {0x11003, 0x11037},
    {0x11071, 0x11072}, {0x11075, 0x11075}, {0x11083, 0x110AF}, {0x110D0, 0x110E8}, {0x11103, 0x11126},
    {0x11144, 0x11144}, {0x11147, 0x11147}, {0x11150, 0x11172}, {0x11176, 0x11176}, {0x11183, 0x111B2},
    {0x111C1, 0x111C4}, {0x111DA, 0x111DA}, {0x111DC, 0x111DC}, {0x11200, 0x11211}, {0x11213, 0x1122B},
    {0x1123F, 0x11240}, {0x11280, 0x11286}, {0x11288, 0x11288}, {0x1128A, 0x1128D}, {0x1128F, 0x1129D},
    {0x1129F, 0x112A8}, {0x112B0, 0x112DE}, {0x11305, 0x1130C}, {0x1130F, 0x11310}, {0x11313, 0x11328},
    {0x1132A, 0x11330}, {0x11332, 0x11333}, {0x11335, 0x11339}, {0x1133D, 0x1133D}, {0x11350, 0x11350},
    {0x1135D, 0x11361}, {0x11400, 0x11434}, {0x11447, 0x1144A}, {0x1145F, 0x11461}, {0x11480, 0x114AF},
    {0x114C4, 0x114C5}, {0x114C7, 0x114C7}, {0x11580, 0x115AE}, {0x115D8, 0x115DB}, {0x11600, 0x1162F},
    {0x11644, 0x11644}, {0x11680, 0x116AA}, {0x116B8, 0x116B8}, {0x11700, 0x1171A}, {0x11740, 0x11746},
    {0x11800, 0x1182B}, {0x118A0, 0x118DF}, {0x118FF, 0x11906}, {0x11909, 0x11909}, {0x1190C, 0x11913},
    {0x11915, 0x11916}, {0x11918, 0x1192F}, {0x1193F, 0x1193F}, {0x11941, 0x11941}, {0x119A0, 0x119A7},
    {0x119AA, 0x119D0}, {0x119E1, 0x119E1}, {0x119E3, 0x119E3}, {0x11A00, 0x11A00}, {0x11A0B, 0x11A32},
    {0x11A3A, 0x11A3A}, {0x11A50, 0x11A50}, {0x11A5C, 0x11A89}, {0x11A9D, 0x11A9D}, {0x11AB0, 0x11AF8},
    {0x11C00, 0x11C08}, {0x11C0A, 0x11C2E}, {0x11C40, 0x11C40}, {0x11C72, 0x11C8F}, {0x11D00, 0x11D06},
    {0x11D08, 0x11D09}, {0x11D0B, 0x11D30}, {0x11D46, 0x11D46}, {0x11D60, 0x11D65}, {0x11D67, 0x11D68},
    {0x11D6A, 0x11D89}, {0x11D98, 0x11D98}, {0x11EE0, 0x11EF2}, {0x11F02, 0x11F02}, {0x11F04, 0x11F10},
    {0x11F12, 0x11F33}, {0x11FB0, 0x11FB0}, {0x12000, 0x12399}, {0x12480, 0x12543}, {0x12F90, 0x12FF0},
    {0x13000, 0x1342F}, {0x13441, 0x13446}, {0x14400, 0x14646}, {0x16800, 0x16A38}, {0x16A40, 0x16A5E},
    {0x16A70, 0x16ABE}, {0x16AD0, 0x16AED}, {0x16B00, 0x16B2F}, {0x16B40, 0x16B43}, {0x16B63, 0x16B77},
    {0x16B7D, 0x16B8F}, {0x16E40, 0x16E7F}, {0x16F00, 0x16F4A}, {0x16F50, 0x16F50}, {0x16F93, 0x16F9F},
    {0x16FE0, 0x16FE1}, {0x16FE3, 0x16FE3}, {0x17000, 0x187F7}, {0x18800, 0x18CD5}, {0x18D00, 0x18D08},
    {0x1AFF0, 0x1AFF3}, {0x1AFF5, 0x1AFFB}, {0x1AFFD, 0x1AFFE}, {0x1B000, 0x1B122}, {0x1B132, 0x1B132},
    {0x1B150, 0x1B152}, {0x1B155, 0x1B155}, {0x1B164, 0x1B167}, {0x1B170, 0x1B2FB}, {0x1BC00, 0x1BC6A},
    {0x1BC70, 0x1BC7C}, {0x1BC80, 0x1BC88}, {0x1BC90, 0x1BC99}, {0x1D400, 0x1D454}, {0x1D456, 0x1D49C},
    {0x1D49E, 0x1D49F}, {0x1D4A2, 0x1D4A2}, {0x1D4A5, 0x1D4A6}, {0x1D4A9, 0x1D4AC}, {0x1D4AE, 0x1D4B9},
    {0x1D4BB, 0x1D4BB}, {0x1D4BD, 0x1D4C3}, {0x1D4C5, 0x1D505}, {0x1D507, 0x1D50A}, {0x1D50D, 0x1D514},
    {0x1D516, 0x1D51C}, {0x1D51E, 0x1D539}, {0x1D53B, 0x1D53E}, {0x1D540, 0x1D544}, {0x1D546, 0x1D546},
    {0x1D54A, 0x1D550}, {0x1D552, 0x1D6A5}, {0x1D6A8, 0x1D6C0}, {0x1D6C2, 0x1D6DA}, {0x1D6DC, 0x1D6FA},
    {0x1D6FC, 0x1D714}, {0x1D716, 0x1D734}, {0x1D736, 0x1D74E}, {0x1D750, 0x1D76E}, {0x1D770, 0x1D788},
    {0x1D78A, 0x1D7A8}, {0x1D7AA, 0x1D7C2}, {0x1D7C4, 0x1D7CB}, {0x1DF00, 0x1DF1E}, {0x1DF25, 0x1DF2A},
    {0x1E030, 0x1E06D}, {0x1E100, 0x1E12C}, {0x1E137, 0x1E13D}, {0x1E14E, 0x1E14E}, {0x1E290, 0x1E2AD},
    {0x1E2C0, 0x1E2EB}, {0x1E4D0, 0x1E4EB}, {0x1E7E0, 0x1E7E6}, {0x1E7E8, 0x1E7EB}, {0x1E7ED, 0x1E7EE},
    {0x1E7F0, 0x1E7FE}, {0x1E800, 0x1E8C4}, {0x1E900, 0x1E943}, {0x1E94B, 0x1E94B}, {0x1EE00, 0x1EE03},
    {0x1EE05, 0x1EE1F}, {0x1EE21, 0x1EE22}, {0x1EE24, 0x1EE24}, {0x1EE27, 0x1EE27}, {0x1EE29, 0x1EE32},
    {0x1EE34, 0x1EE37}, {0x1EE39, 0x1EE39}, {0x1EE3B, 0x1EE3B}, {0x1EE42, 0x1EE42}, {0x1EE47, 0x1EE47},
    {0x1EE49, 0x1EE49}, {0x1EE4B, 0x1EE4B}, {0x1EE4D, 0x1EE4F}, {0x1EE51, 0x1EE52}, {0x1EE54, 0x1EE54},
    {0x1EE57, 0x1EE57}, {0x1EE59, 0x1EE59}, {0x1EE5B, 0x1EE5B}, {0x1EE5D, 0x1EE5D}, {0x1EE5F, 0x1EE5F},
    {0x1EE61, 0x1EE62}, {0x1EE64, 0x1EE64}, {0x1EE67, 0x1EE6A}, {0x1EE6C, 0x1EE72}, {0x1EE74, 0x1EE77},
    {0x1EE79, 0x1EE7C}, {0x1EE7E, 0x1EE7E}, {0x1EE80, 0x1EE89}, {0x1EE8B, 0x1EE9B}, {0x1EEA1, 0x1EEA3},
    {0x1EEA5, 0x1EEA9}, {0x1EEAB, 0x1EEBB}, {0x20000, 0x2A6DF}, {0x2A700, 0x2B739}, {0x2B740, 0x2B81D},
    {0x2B820, 0x2CEA1}, {0x2CEB0, 0x2EBE0}, {0x2F800, 0x2FA1D}, {0x30000, 0x3134A}, {0x31350, 0x323AF},
};
constexpr RuneRange kDigits[] = {
    {0x660, 0x669}, {0x6F0, 0x6F9}, {0x7C0, 0x7C9}, {0x966, 0x96F}, {0x9E6, 0x9EF}, {0xA66, 0xA6F},
    {0xAE6, 0xAEF}, {0xB66, 0xB6F}, {0xBE6, 0xBEF}, {0xC66, 0xC6F}, {0xCE6, 0xCEF}, {0xD66, 0xD6F},
    {0xDE6, 0xDEF}, {0xE50, 0xE59}, {0xED0, 0xED9}, {0xF20, 0xF29}, {0x1040, 0x1049}, {0x1090, 0x1099},
    {0x17E0, 0x17E9}, {0x1810, 0x1819}, {0x1946, 0x194F}, {0x19D0, 0x19D9}, {0x1A80, 0x1A89},
    {0x1A90, 0x1A99}, {0x1B50, 0x1B59}, {0x1BB0, 0x1BB9}, {0x1C40, 0x1C49}, {0x1C50, 0x1C59},
    {0xA620, 0xA629}, {0xA8D0, 0xA8D9}, {0xA900, 0xA909}, {0xA9D0, 0xA9D9}, {0xA9F0, 0xA9F9},
    {0xAA50, 0xAA59}, {0xABF0, 0xABF9}, {0xFF10, 0xFF19}, {0x104A0, 0x104A9}, {0x10D30, 0x10D39},
    {0x11066, 0x1106F}, {0x110F0, 0x110F9}, {0x11136, 0x1113F}, {0x111D0, 0x111D9}, {0x112F0, 0x112F9},
    {0x11450, 0x11459}, {0x114D0, 0x114D9}, {0x11650, 0x11659}, {0x116C0, 0x116C9}, {0x11730, 0x11739},
    {0x118E0, 0x118E9}, {0x11950, 0x11959}, {0x11C50, 0x11C59}, {0x11D50, 0x11D59}, {0x11DA0, 0x11DA9},
    {0x11F50, 0x11F59}, {0x16A60, 0x16A69}, {0x16AC0, 0x16AC9}, {0x16B50, 0x16B59}, {0x1D7CE, 0x1D7FF},
    {0x1E140, 0x1E149}, {0x1E2F0, 0x1E2F9}, {0x1E4F0, 0x1E4F9}, {0x1E950, 0x1E959}, {0x1FBF0, 0x1FBF9},
};

template <std::size_t N>
bool in_table(const RuneRange (&table)[N], Rune r) {
  auto starts_after = [](Rune v, const RuneRange& range) { return v < range.lo; };
  const RuneRange* it = std::upper_bound(std::begin(table), std::end(table), r, starts_after);
  return it != std::begin(table) && r <= std::prev(it)->hi;
}

bool is_letter(Rune r) {
  if (r < 0x80) return (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z');
  return in_table(kLetters, r);
}

bool is_digit(Rune r) {
  if (r < 0x80) return r >= '0' && r <= '9';
  return in_table(kDigits, r);
}

// UTF-8 decoded as Go does: each byte of a bad sequence reads as U+FFFD.
std::vector<Rune> decode(std::string_view s) {
  std::vector<Rune> runes;
  runes.reserve(s.size());
  for (std::size_t pos = 0; pos < s.size();) {
    const DecodedRune d = decode_rune(s, pos);
    runes.push_back(d.value);
    pos += d.width;
  }
  return runes;
}

std::string encode(const std::vector<Rune>& runes) {
  std::string out;
  out.reserve(runes.size());
  for (Rune r : runes) append_utf8(out, r);
  return out;
}

std::string rune_string(Rune r) {
  std::string out;
  append_utf8(out, r);
  return out;
}

// The runes text/scanner reads from s: a leading byte order mark is skipped.
std::vector<Rune> scan_runes(std::string_view s) {
  std::vector<Rune> runes = decode(s);
  if (!runes.empty() && runes.front() == kByteOrderMark) runes.erase(runes.begin());
  return runes;
}


// A syntax or substitution error inside one word; expand() adds the word to it.
struct LexError {
  std::string message;
};

[[noreturn]] void fail(std::string message) { throw LexError{std::move(message)}; }

// ---- Shell patterns of ${v#p}, ${v%p} and ${v/p/r} ----
//
// BuildKit turns a pattern into a Go regular expression: `*` is `.*` (`.*?` for the shortest
// match), `?` is `.`, `\` escapes only `*`, `?` and `\` (and is dropped before `}` and `/`), and
// everything else, `[` included, is literal: there are no bracket expressions. As `.` does, `*`
// and `?` never match a newline. Matches follow Go's leftmost-first rule.

enum class PatternOp { literal, any, star };

struct PatternItem {
  PatternOp op;
  Rune rune;  // for literal
};

std::vector<PatternItem> compile_pattern(std::string_view pattern) {
  const std::vector<Rune> runes = scan_runes(pattern);
  std::vector<PatternItem> items;
  for (std::size_t i = 0; i < runes.size(); ++i) {
    Rune r = runes[i];
    if (r == '*') {
      items.push_back({PatternOp::star, 0});
      continue;
    }
    if (r == '?') {
      items.push_back({PatternOp::any, 0});
      continue;
    }
    if (r == '\\') {
      const Rune following = i + 1 < runes.size() ? runes[i + 1] : kEof;
      // `}` and `/` are escaped to get past the ${} syntax; the escape is not part of the pattern.
      if (following == '}' || following == '/') continue;
      ++i;
      if (following != '*' && following != '?' && following != '\\') {
        fail("invalid pattern (" + std::string(pattern) + ") in substitution: invalid escape '\\" +
             rune_string(following) + "'");
      }
      r = following;
    }
    items.push_back({PatternOp::literal, r});
  }
  return items;
}

// For every start position in text, the end of the match of items there that Go's regexp would
// prefer, or -1. Computed from the last item back, so each item costs one pass over the text.
std::vector<long> match_ends(const std::vector<PatternItem>& items, const std::vector<Rune>& text, bool greedy) {
  const std::size_t n = text.size();
  std::vector<long> rest(n + 1);  // ends for the items after the current one
  for (std::size_t p = 0; p <= n; ++p) rest[p] = static_cast<long>(p);
  std::vector<long> here(n + 1);
  for (std::size_t i = items.size(); i-- > 0;) {
    const PatternItem& item = items[i];
    if (item.op != PatternOp::star) {
      for (std::size_t p = 0; p <= n; ++p) {
        const bool ok = p < n && (item.op == PatternOp::literal ? text[p] == item.rune : text[p] != '\n');
        here[p] = ok ? rest[p + 1] : -1;
      }
    } else {
      // A star at p may end anywhere in [p, next newline]; greedy prefers the last end that
      // lets the rest match, lazy the first.
      long chosen = -1;  // end chosen for p + 1, when p + 1 is in the same line
      for (std::size_t p = n + 1; p-- > 0;) {
        const bool line_end = p == n || text[p] == '\n';
        const bool fits = rest[p] >= 0;
        if (line_end) {
          chosen = fits ? static_cast<long>(p) : -1;
        } else if (greedy) {
          if (chosen < 0 && fits) chosen = static_cast<long>(p);
        } else if (fits) {
          chosen = static_cast<long>(p);
        }
        here[p] = chosen >= 0 ? rest[static_cast<std::size_t>(chosen)] : -1;
      }
    }
    std::swap(rest, here);
  }
  return rest;
}

// Text split into runes, remembering where each starts, so matches can cut the original bytes.
struct IndexedText {
  std::vector<Rune> runes;
  std::vector<std::size_t> offsets;  // one per rune, plus the end

  explicit IndexedText(std::string_view s) {
    for (std::size_t pos = 0; pos < s.size();) {
      const DecodedRune d = decode_rune(s, pos);
      runes.push_back(d.value);
      offsets.push_back(pos);
      pos += d.width;
    }
    offsets.push_back(s.size());
  }
};

// BuildKit's trimPrefix: drops the part of value that an anchored match of pattern covers.
std::string trim_prefix(std::string_view pattern, std::string_view value, bool longest) {
  const std::vector<PatternItem> items = compile_pattern(pattern);
  const IndexedText text(value);
  const long end = match_ends(items, text.runes, longest)[0];
  if (end < 0) return std::string(value);
  return std::string(value.substr(text.offsets[static_cast<std::size_t>(end)]));
}

// BuildKit's reversePattern: reverses the runes but keeps each `\x` pair in order.
std::string reverse_pattern(std::string_view pattern) {
  const std::vector<Rune> runes = decode(pattern);
  std::vector<Rune> out(runes.size());
  const std::size_t last = runes.size() - 1;
  for (std::size_t i = 0; i < runes.size();) {
    const std::size_t to = last - i;
    if (runes[i] == '\\' && i != last) {
      out[to - 1] = runes[i];
      out[to] = runes[i + 1];
      i += 2;
    } else {
      out[to] = runes[i];
      ++i;
    }
  }
  return encode(out);
}

std::string reverse_runes(std::string_view s) {
  std::vector<Rune> runes = decode(s);
  std::reverse(runes.begin(), runes.end());
  return encode(runes);
}

// BuildKit's trimSuffix: a shortest or longest match from the right is a match from the left of
// the reversed value and pattern.
std::string trim_suffix(std::string_view pattern, std::string_view value, bool longest) {
  return reverse_runes(trim_prefix(reverse_pattern(pattern), reverse_runes(value), longest));
}

// Go's regexp.Regexp.Expand on a replacement for a pattern without groups: `$$` is `$`, `$0` or
// `${0}` the whole match, any other `$name` or `${name}` nothing, and a `$` without a name itself.
void append_template(std::string& out, std::string_view tmpl, std::string_view match) {
  std::size_t pos = 0;
  while (pos < tmpl.size()) {
    const std::size_t dollar = tmpl.find('$', pos);
    if (dollar == std::string_view::npos) break;
    out.append(tmpl.substr(pos, dollar - pos));
    pos = dollar + 1;
    if (pos < tmpl.size() && tmpl[pos] == '$') {
      out += '$';
      ++pos;
      continue;
    }
    std::size_t at = pos;
    const bool brace = at < tmpl.size() && tmpl[at] == '{';
    if (brace) ++at;
    const std::size_t name_start = at;
    while (at < tmpl.size()) {
      const DecodedRune d = decode_rune(tmpl, at);
      if (!is_letter(d.value) && !is_digit(d.value) && d.value != '_') break;
      at += d.width;
    }
    const std::string_view name = tmpl.substr(name_start, at - name_start);
    if (name.empty() || (brace && (at >= tmpl.size() || tmpl[at] != '}'))) {
      out += '$';
      continue;
    }
    if (brace) ++at;
    // Only group 0 exists; a number with a leading zero or a name is not group 0.
    if (name == "0") out.append(match);
    pos = at;
  }
  out.append(tmpl.substr(pos));
}

// ${v/p/r} and ${v//p/r}: the first or every leftmost match of pattern (stars greedy) replaced.
std::string replace_pattern(std::string_view value, std::string_view pattern, std::string_view replacement,
                            bool all) {
  const std::vector<PatternItem> items = compile_pattern(pattern);
  const IndexedText text(value);
  const std::vector<long> ends = match_ends(items, text.runes, true);
  const std::size_t n = text.runes.size();
  std::vector<std::size_t> next_start(n + 2, n + 1);  // first start at or after p with a match
  for (std::size_t p = n + 1; p-- > 0;) next_start[p] = ends[p] >= 0 ? p : next_start[p + 1];
  auto find_from = [&](std::size_t from) -> std::optional<std::pair<std::size_t, std::size_t>> {
    const std::size_t start = next_start[from];
    if (start > n) return std::nullopt;
    return std::pair{start, static_cast<std::size_t>(ends[start])};
  };
  auto bytes = [&](std::size_t from, std::size_t to) {
    return value.substr(text.offsets[from], text.offsets[to] - text.offsets[from]);
  };
  if (!all) {
    // BuildKit: a single replacement is pasted in as it is, without Go's template expansion.
    const auto match = find_from(0);
    if (!match) return std::string(value);
    std::string out(bytes(0, match->first));
    out.append(replacement);
    out.append(bytes(match->second, n));
    return out;
  }
  // Go's Regexp.ReplaceAllString: an empty match right after a match is not replaced, and the
  // search always moves on by at least one rune.
  std::string out;
  std::size_t last_end = 0;
  for (std::size_t search = 0; search <= n;) {
    const auto match = find_from(search);
    if (!match) break;
    const auto [start, end] = *match;
    out.append(bytes(last_end, start));
    if (end > last_end || start == 0) append_template(out, replacement, bytes(start, end));
    last_end = end;
    search = std::max(search + 1, end);
  }
  out.append(bytes(last_end, n));
  return out;
}

// ---- Expansion of one word: BuildKit's shellWord ----

struct LexOptions {
  Rune escape;
  bool raw_quotes;
  bool raw_escapes;
  bool skip_process_quotes;
  bool skip_unset;
};

// BuildKit's wordsStruct: splits on unquoted whitespace while the word is read.
class WordSplitter {
 public:
  explicit WordSplitter(std::string& buffer) : buffer_(buffer) {}

  void add_char(Rune r) {
    if (!is_go_space(r)) {
      add_raw_char(r);
    } else if (in_word_ && !buffer_.empty()) {
      words_.push_back(std::move(buffer_));
      buffer_.clear();
      in_word_ = false;
    }
  }
  void add_raw_char(Rune r) {
    append_utf8(buffer_, r);
    in_word_ = true;
  }
  void add_string(std::string_view s) {
    for (Rune r : decode(s)) add_char(r);
  }
  void add_raw_string(std::string_view s) {
    buffer_.append(s);
    in_word_ = true;
  }
  std::vector<std::string> finish() {
    if (!buffer_.empty()) {
      words_.push_back(std::move(buffer_));
      buffer_.clear();
      in_word_ = false;
    }
    return std::move(words_);
  }

 private:
  std::string& buffer_;
  std::vector<std::string> words_;
  bool in_word_ = false;
};

class WordExpander {
 public:
  WordExpander(const LexOptions& options, const VariableLookup& lookup, std::string_view word)
      : options_(options), lookup_(lookup), source_(scan_runes(word)), raw_escapes_(options.raw_escapes) {}

  // The expanded word and, split on unquoted whitespace, its words.
  std::pair<std::string, std::vector<std::string>> run() {
    std::vector<std::string> words;
    std::string result = process_until(kEof, options_.raw_escapes, &words);
    return {std::move(result), std::move(words)};
  }

  // The variables referenced so far that were set, and those that were not.
  std::set<std::string> take_used() { return std::move(used_); }
  std::set<std::string> take_unset() { return std::move(unset_); }

 private:
  Rune peek() const { return pos_ < source_.size() ? source_[pos_] : kEof; }
  Rune next() { return pos_ < source_.size() ? source_[pos_++] : kEof; }

  // Reads up to stop (consumed) or the end of the word; stop is kEof for the whole word.
  std::string process_until(Rune stop, bool raw_escapes, std::vector<std::string>* words_out) {
    // BuildKit: nested calls (the w of ${v:-w}) share one word buffer and reset it, so a
    // partial word before a ${v:-w} is lost from the split words, though not from the result.
    words_buffer_.clear();
    WordSplitter words(words_buffer_);
    const bool saved_raw_escapes = std::exchange(raw_escapes_, raw_escapes);
    std::string result;
    bool stopped = false;
    while (peek() != kEof) {
      Rune r = peek();
      if (stop != kEof && r == stop) {
        next();
        stopped = true;
        break;
      }
      if (r == '$' || r == '<' || (!options_.skip_process_quotes && (r == '\'' || r == '"'))) {
        const std::string part = r == '$'    ? process_dollar()
                                 : r == '<'  ? process_possible_heredoc()
                                 : r == '\'' ? process_single_quote()
                                             : process_double_quote();
        result += part;
        // A variable's value is split on whitespace; quoted text is not.
        if (r == '$') {
          words.add_string(part);
        } else {
          words.add_raw_string(part);
        }
        continue;
      }
      r = next();
      if (r == options_.escape) {
        if (raw_escapes_) {
          words.add_raw_char(r);
          append_utf8(result, r);
        }
        // The escape character escapes anything, and is dropped at the end of the word.
        r = next();
        if (r == kEof) break;
        words.add_raw_char(r);
      } else {
        words.add_char(r);
      }
      append_utf8(result, r);
    }
    if (stop != kEof && !stopped) {
      fail("unexpected end of statement while looking for matching " + rune_string(stop));
    }
    raw_escapes_ = saved_raw_escapes;
    std::vector<std::string> split = words.finish();
    if (words_out) *words_out = std::move(split);
    return result;
  }

  // As process_until, but an unterminated ${ reads as a missing closing character.
  std::string process_until_closing(Rune stop, bool raw_escapes, const char* missing) {
    try {
      return process_until(stop, raw_escapes, nullptr);
    } catch (const LexError&) {
      if (peek() == kEof) fail(missing);
      throw;
    }
  }

  // '...': everything is literal up to the next single quote, which cannot be escaped.
  std::string process_single_quote() {
    std::string result;
    Rune r = next();
    if (options_.raw_quotes) append_utf8(result, r);
    for (;;) {
      r = next();
      if (r == kEof) fail("unexpected end of statement while looking for matching single-quote");
      if (r == '\'') {
        if (options_.raw_quotes) append_utf8(result, r);
        return result;
      }
      append_utf8(result, r);
    }
  }

  // "...": variables expand, and the escape character escapes only `"`, `$` and itself.
  std::string process_double_quote() {
    std::string result;
    Rune r = next();
    if (options_.raw_quotes) append_utf8(result, r);
    for (;;) {
      const Rune ahead = peek();
      if (ahead == kEof) fail("unexpected end of statement while looking for matching double-quote");
      if (ahead == '"') {
        r = next();
        if (options_.raw_quotes) append_utf8(result, r);
        return result;
      }
      if (ahead == '$') {
        result += process_dollar();
        continue;
      }
      r = next();
      if (r == options_.escape) {
        if (raw_escapes_) append_utf8(result, r);
        const Rune escaped = peek();
        if (escaped == kEof) continue;  // reported as the missing quote
        if (escaped == '"' || escaped == '$' || escaped == options_.escape) r = next();
      }
      append_utf8(result, r);
    }
  }

  // `<<` and the blanks after it stay one piece, so a heredoc marker is never split off its word.
  std::string process_possible_heredoc() {
    next();
    if (peek() != '<') return "<";
    next();
    std::string result = "<<";
    while (peek() == ' ' || peek() == '\t' || peek() == '\r') append_utf8(result, next());
    return result;
  }

  static bool is_special_parameter(Rune r) {
    switch (r) {
      case '@': case '*': case '#': case '?': case '-': case '$': case '!': case '0':
        return true;
      default:
        return false;
    }
  }

  // A variable name: letters, digits and `_`; or a run of digits (positional parameters); or
  // one special parameter character such as `@` or `#`.
  std::string process_name() {
    std::string name;
    while (peek() != kEof) {
      const Rune r = peek();
      if (name.empty() && is_digit(r)) {
        while (is_digit(peek())) append_utf8(name, next());
        return name;
      }
      if (name.empty() && is_special_parameter(r)) return rune_string(next());
      if (!is_letter(r) && !is_digit(r) && r != '_') break;
      append_utf8(name, next());
    }
    return name;
  }

  std::optional<std::string> get_env(const std::string& name) {
    std::optional<std::string> value = lookup_(name);
    (value ? used_ : unset_).insert(name);
    return value;
  }

  std::string process_dollar() {
    next();
    if (peek() != '{') {
      const std::string name = process_name();
      if (name.empty()) return "$";
      std::optional<std::string> value = get_env(name);
      if (!value && options_.skip_unset) return "$" + name;
      return value.value_or("");
    }
    next();
    // BuildKit has no limit (Go stacks grow); ours keeps a hostile word from exhausting the stack.
    if (depth_ == kMaxNesting) fail("syntax error: more than " + std::to_string(kMaxNesting) + " nested ${}");
    ++depth_;
    std::string value = process_braced();
    --depth_;
    return value;
  }

  // After "${".
  std::string process_braced() {
    const Rune first = peek();
    if (first == kEof) fail("syntax error: missing '}'");
    if (first == '{' || first == '}' || first == ':') fail("syntax error: bad substitution");
    const std::string name = process_name();
    Rune op = next();
    std::string op_text = rune_string(op);
    switch (op) {
      case '}': {
        std::optional<std::string> value = get_env(name);
        if (!value && options_.skip_unset) return "${" + name + "}";
        return value.value_or("");
      }
      case ':':
        op = next();
        op_text += rune_string(op);
        return process_modifier(name, op, op_text, true);
      case '+': case '-': case '?': case '#': case '%':
        return process_modifier(name, op, op_text, false);
      case '/':
        return process_substitution(name);
      default:
        fail("unsupported modifier (" + op_text + ") in substitution");
    }
  }

  // ${v-w} ${v:-w} ${v+w} ${v:+w} ${v?m} ${v:?m} ${v#p} ${v##p} ${v%p} ${v%%p}
  std::string process_modifier(const std::string& name, Rune op, const std::string& op_text, bool null_is_unset) {
    const bool is_pattern = op == '#' || op == '%';
    if (null_is_unset && is_pattern) fail("unsupported modifier (" + op_text + ") in substitution");
    // BuildKit: a pattern keeps its escapes for the pattern syntax; a default value does not.
    std::string word = process_until_closing('}', is_pattern, "syntax error: missing '}'");
    const std::optional<std::string> value = get_env(name);
    if (!value && options_.skip_unset) return "${" + name + op_text + word + "}";
    const bool empty = !value || (null_is_unset && value->empty());
    switch (op) {
      case '-':
        return empty ? word : *value;
      case '+':
        return empty ? std::string() : word;
      case '?':
        if (empty) {
          if (!word.empty()) fail(name + ": " + word);
          fail(name + (value ? ": is not allowed to be empty" : ": is not allowed to be unset"));
        }
        return *value;
      case '#':
      case '%': {
        // `##` and `%%` take the longest match; the doubled character is read after expansion.
        const bool longest = !word.empty() && word.front() == static_cast<char>(op);
        if (longest) word.erase(0, 1);
        return op == '%' ? trim_suffix(word, value.value_or(""), longest)
                         : trim_prefix(word, value.value_or(""), longest);
      }
      default:
        fail("unsupported modifier (" + op_text + ") in substitution");
    }
  }

  // ${v/p/r} and ${v//p/r}
  std::string process_substitution(const std::string& name) {
    const bool all = peek() == '/';
    if (all) next();
    const std::string pattern = process_until_closing('/', true, "syntax error: missing '/' in ${}");
    const std::string replacement = process_until_closing('}', true, "syntax error: missing '}'");
    const std::optional<std::string> value = get_env(name);
    // BuildKit: the second `/` of `//` is not kept here.
    if (!value && options_.skip_unset) return "${" + name + "/" + pattern + "/" + replacement + "}";
    return replace_pattern(value.value_or(""), pattern, replacement, all);
  }

  static constexpr int kMaxNesting = 128;

  const LexOptions& options_;
  const VariableLookup& lookup_;
  int depth_ = 0;
  std::vector<Rune> source_;
  std::size_t pos_ = 0;
  bool raw_escapes_;
  std::string words_buffer_;
  std::set<std::string> used_;
  std::set<std::string> unset_;
};

}  // namespace

std::string ShellLexer::expand_word(std::string_view word, const VariableLookup& lookup) const {
  return std::move(expand(word, lookup, false).words.front());
}

std::vector<std::string> ShellLexer::expand_words(std::string_view word, const VariableLookup& lookup) const {
  return expand(word, lookup, true).words;
}

Expansion ShellLexer::expand(std::string_view word, const VariableLookup& lookup, bool split) const {
  const LexOptions options{static_cast<unsigned char>(escape_), raw_quotes_, raw_escapes_, skip_process_quotes_,
                           skip_unset_};
  WordExpander expander(options, lookup, word);
  Expansion expansion;
  try {
    auto [result, words] = expander.run();
    if (split) {
      expansion.words = std::move(words);
    } else {
      expansion.words.push_back(std::move(result));
    }
  } catch (const LexError& e) {
    throw Error(ErrorKind::user, "failed to process " + go_quote(word) + ": " + e.message);
  }
  expansion.used = expander.take_used();
  expansion.unset = expander.take_unset();
  return expansion;
}

}  // namespace kbuild::dockerfile
