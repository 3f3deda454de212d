// Tests of the Jinja2 interpreter and chat templates (io/jinja.h, io/chat_template.h).
// Every expected output below was produced by transformers' own chat-template environment
// (jinja2 with trim_blocks, lstrip_blocks, loopcontrols and transformers' tojson/globals).
#include <gtest/gtest.h>

#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/chat_template.h"
#include "io/jinja.h"
#include "kernels/error.h"

namespace tessera {
namespace {

std::string Render(const std::string& tmpl, const std::string& context_json) {
  return JinjaTemplate(tmpl).render(nlohmann::ordered_json::parse(context_json));
}

// The error a template throws; fails the test when it renders.
Error RenderError(const std::string& tmpl, const std::string& context_json = "{}") {
  try {
    std::string out = Render(tmpl, context_json);
    ADD_FAILURE() << "expected an error, rendered: " << out;
  } catch (const Error& e) {
    return e;
  }
  return Error(ErrorKind::kInternal, "no error", __FILE__, __LINE__);
}

std::string ReadTemplate(const std::string& name) {
  std::string path = TESSERA_TEST_DATA_DIR;
  path.append("/chat_templates/").append(name).append(".jinja");
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << "missing template " << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- rendering cases -----------------------------------------------------------------------

struct RenderCase {
  const char* name;
  const char* tmpl;
  const char* context;
  const char* expected;
};

// gtest prints a case by its name (ctest lists it), not as raw bytes.
void PrintTo(const RenderCase& c, std::ostream* os) { *os << c.name; }

const char* const kContext =
    R"json({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "xs": [1, 2, 3], "d": {"b": 1, "a": 2}, "s": "héllo", "n": null, "name": "World", "empty": [], "flag": true, "f": 2.5, "nested": {"x": {"y": [10, 20]}}})json";

const RenderCase kRenderCases[] = {
    {"Text", "plain text", "{}", "plain text"},
    {"Output", "Hello {{ name }}!", kContext, "Hello World!"},
    {"Comment", "a{# comment #}b", "{}", "ab"},
    {"TrailingNewline", "a\n", "{}", "a"},
    {"TwoTrailingNewlines", "a\n\n", "{}", "a\n"},
    {"Crlf", "a\r\nb{% if true %}\r\nc{% endif %}\r\n", "{}", "a\nbc"},
    {"TrimBlocks", "{% if true %}\nyes\n{% endif %}\nend", "{}", "yes\nend"},
    {"LstripBlocks", "  {% if true %}\n  a\n  {% endif %}\nb", "{}", "  a\nb"},
    {"LstripNotVars", "a\n  {{ 1 }}\n", "{}", "a\n  1"},
    {"LstripMidLine", "x  {% if true %}y{% endif %}", "{}", "x  y"},
    {"CommentTrim", "x  {# c #}\ny", "{}", "x  y"},
    {"CommentLstrip", "x\n   {# c #}\ny", "{}", "x\ny"},
    {"PlusModifiers", "x  {%+ if true %}\ny{% endif +%}\nz", "{}", "x  y\nz"},
    {"MinusModifiers", "a  \n  {%- if true -%}  \n  b  \n  {%- endif -%}\n  c", "{}", "abc"},
    {"VarMinus", "a  {{- 'b' -}}  c\n{{ 'd' }}", "{}", "abc\nd"},
    {"Raw", "{% raw %}{{ not rendered }}{% endraw %}!", "{}", "{{ not rendered }}!"},
    {"IfElifElse",
     "{% for i in xs %}{% if i == 1 %}one{% elif i == 2 %}two{% else %}many{% endif %},{% "
     "endfor %}",
     kContext, "one,two,many,"},
    {"ForLoopVars",
     "{% for i in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ "
     "loop.length }}{{ loop.revindex }}{{ loop.revindex0 }} {% endfor %}",
     kContext, "10TrueFalse332 21FalseFalse321 32FalseTrue310 "},
    {"ForElse", "{% for x in empty %}a{% else %}empty{% endfor %}", kContext, "empty"},
    {"ForFilter", "{% for i in xs if i > 1 %}{{ loop.index }}/{{ loop.length }} {% endfor %}",
     kContext, "1/2 2/2 "},
    {"ForItems", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", kContext, "b=1;a=2;"},
    {"ForDictKeys", "{% for k in d %}{{ k }}{% endfor %}", kContext, "ba"},
    {"ForString", "{% for c in s %}[{{ c }}]{% endfor %}", kContext, "[h][é][l][l][o]"},
    {"ForTupleParens", "{% for (a, b) in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", "{}", "37"},
    {"LoopCycle", "{% for i in xs %}{{ loop.cycle('odd', 'even') }} {% endfor %}", kContext,
     "odd even odd "},
    {"LoopPrevNext", "{% for i in xs %}{{ loop.previtem }}-{{ loop.nextitem }} {% endfor %}",
     kContext, "-2 1-3 2- "},
    {"NestedLoops",
     "{% for i in [1, 2] %}{% for j in [3, 4] %}{{ i * j }}{{ loop.index }} {% endfor %}{{"
     " loop.index }}|{% endfor %}",
     "{}", "31 42 1|61 82 2|"},
    {"BreakContinue",
     "{% for i in xs %}{% if i == 2 %}{% continue %}{% endif %}{{ i }}{% if i == 3 %}{% br"
     "eak %}{% endif %}{% endfor %}",
     kContext, "13"},
    {"LoopScope",
     "{% set x = 0 %}{% for i in xs %}{{ x }}{% set x = x + i %}{{ x }},{% endfor %}|{{ x "
     "}}",
     kContext, "01,02,03,|0"},
    {"LoopScopeFresh",
     "{% for i in xs %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}|{{ y"
     " }}",
     kContext, "[]|"},
    {"IfScopeLeaks", "{% if true %}{% set z = 5 %}{% endif %}{{ z }}", "{}", "5"},
    {"Namespace",
     "{% set ns = namespace(found=false, n=0) %}{% for i in xs %}{% if i > 1 %}{% set ns.f"
     "ound = true %}{% set ns.n = ns.n + i %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n"
     " }}",
     kContext, "True 5"},
    {"SetTuple", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}", "{}", "1two"},
    {"SetBlock", "{% set x %}  inner {{ 1 }} {% endset %}[{{ x }}]", "{}", "[  inner 1 ]"},
    {"SetBlockFilter", "{% set x | upper %}abc{% endset %}{{ x }}", "{}", "ABC"},
    {"With", "{% with a = 1, b = 2 %}{{ a + b }}{% endwith %}{{ a }}", "{}", "3"},
    {"Macro",
     "{% macro greet(who, punct='!') %}Hi {{ who }}{{ punct }}{% endmacro %}{{ greet('A') "
     "}} {{ greet('B', '?') }} {{ greet(who='C', punct='.') }}",
     "{}", "Hi A! Hi B? Hi C."},
    {"FilterBlock", "{% filter upper %}abc {{ name }}{% endfilter %}", kContext, "ABC WORLD"},
    {"Generation", "{% generation %}gen{% endgeneration %}", "{}", "gen"},
    {"Literals",
     "{{ 1 }} {{ -2 }} {{ 1.5 }} {{ 1e3 }} {{ 1_000 }} {{ 0x1f }} {{ true }} {{ False }} {"
     "{ none }} {{ None }} {{ 'a' \"b\" }}",
     "{}", "1 -2 1.5 1000.0 1000 31 True False None None ab"},
    {"StringEscapes",
     "{{ 'a\\nb\\tc\\\\d\\'e' }}|{{ \"q\\\"q\" }}|{{ '\\x41\\u00e9\\U0001F600' }}|{{ '\\d'"
     " }}",
     "{}", "a\nb\tc\\d'e|q\"q|Aé😀|\\d"},
    {"FloatRepr",
     "{{ 1.0 }} {{ 1e20 }} {{ 1e16 }} {{ 1e15 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1/3 }} {{ 2"
     ".5e-7 }} {{ -0.0 }} {{ 123456789.125 }}",
     "{}",
     "1.0 1e+20 1e+16 1000000000000000.0 0.0001 1e-05 0.3333333333333333 2.5e-07 -0.0 1234"
     "56789.125"},
    {"ListDictRepr",
     "{{ [1, 'a', none, true, 1.5] }} {{ {'a': \"x'y\", 'b': [1]} }} {{ ['it\\'s', 'say \""
     "hi\"', 'both \\' \"'] }} {{ [] }} {{ {} }}",
     "{}",
     "[1, 'a', None, True, 1.5] {'a': \"x'y\", 'b': [1]} [\"it's\", 'say \"hi\"', 'both \\"
     "' \"'] [] {}"},
    {"Arith",
     "{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 4 "
     "/ 2 }} {{ 'ab' * 2 }} {{ 7.5 // 2 }} {{ 1 + 2 * 3 - 4 }} {{ (1 + 2) * 3 }} {{ 2 ** 3"
     " ** 2 }} {{ -2 ** 2 }}",
     "{}", "3 -4 2 -2 3.5 1024 2.0 abab 3.0 3 9 64 4"},
    {"MixedArith", "{{ 1 + 2.5 }} {{ true + 1 }} {{ 10 - f }} {{ [1] + [2, 3] }} {{ 3 * [0] }}",
     kContext, "3.5 2 7.5 [1, 2, 3] [0, 0, 0]"},
    {"Concat", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_thing }} {{ 'a' + 'b' }}", "{}",
     "a1NoneTrue ab"},
    {"Compare",
     "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1, 2] ="
     "= [1, 2] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ none == none }} {{ 1 == '1' }}",
     "{}", "True False True True True True True False True False"},
    {"Logic",
     "{{ true and false }} {{ true or false }} {{ not true }} {{ 0 or 'x' }} {{ '' and 'y'"
     " }} {{ 'a' and 'b' }} {{ none or [] }} {{ not none is none }}",
     "{}", "False True False x  b [] False"},
    {"InOp",
     "{{ 1 in xs }} {{ 5 not in xs }} {{ 'a' in d }} {{ 'ell' in 'hello' }} {{ 'z' in 'hel"
     "lo' }} {{ 'x' in undefined_thing }}",
     kContext, "True True True True False False"},
    {"CondExpr",
     "{{ 'yes' if flag else 'no' }} {{ 'yes' if not flag else 'no' }} [{{ 'x' if false }}]",
     kContext, "yes no []"},
    {"AttrItem",
     "{{ messages[0]['role'] }} {{ messages[0].content }} {{ messages[-1].role }} {{ neste"
     "d.x.y[1] }} {{ nested['x']['y'][0] }} {{ xs.0 }}",
     kContext, "system Be brief. assistant 20 10 1"},
    {"MissingAttr",
     "[{{ d.c }}][{{ d['c'] }}][{{ xs[10] }}][{{ messages[0].nope }}] {{ d.c is defined }}"
     " {{ d.b is defined }}",
     kContext, "[][][][] False True"},
    {"Slices",
     "{{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ s[1:3] }} {{ s[::-1] }} {"
     "{ xs[5:] }} {{ xs[-2:] }} {{ messages[1:]|length }}",
     kContext, "[2, 3] [1, 2] [3, 2, 1] [1, 3] él olléh [] [2, 3] 2"},
    {"Undefined",
     "[{{ nothing }}] {{ nothing is defined }} {{ nothing is undefined }} {{ not nothing }"
     "} {{ nothing|length }} [{{ nothing|default('dflt') }}] {{ nothing == none }} {{ noth"
     "ing is none }}",
     "{}", "[] False True True 0 [dflt] False False"},
    {"NoneVsDefault",
     "{{ n|default('x') }} {{ n|default('x', true) }} {{ ''|default('y', boolean=true) }} "
     "{{ 0|d(5) }}",
     kContext, "None x y 0"},
    {"Tests",
     "{{ s is string }} {{ xs is string }} {{ d is mapping }} {{ xs is mapping }} {{ xs is"
     " iterable }} {{ s is iterable }} {{ 1 is number }} {{ 1.5 is float }} {{ 1 is intege"
     "r }} {{ true is boolean }} {{ n is none }} {{ n is not none }} {{ xs is sequence }} "
     "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{"
     " 'abc' is lower }} {{ 'ABC' is upper }} {{ true is true }} {{ 1 is true }} {{ 2 is e"
     "q 2 }} {{ 2 is ne 2 }} {{ 'a' is in 'abc' }} {{ 3 is gt 2 }} {{ 1 is lessthan 2 }} {"
     "{ nothing is iterable }} {{ range is callable }}",
     kContext,
     "True False True False True True True True True True True False True True True True F"
     "alse True True True False True False True True True True True"},
    {"FiltersBasic",
     "{{ '  x  '|trim }}|{{ 'xxaxx'|trim('x') }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'h"
     "ello wORLD-foo (bar'|title }}|{{ 'hELLO world'|capitalize }}|{{ xs|length }}|{{ s|le"
     "ngth }}|{{ d|count }}",
     kContext, "x|a|ABC|abc|Hello World-Foo (Bar|Hello world|3|5|2"},
    {"FiltersSeq",
     "{{ xs|first }} {{ xs|last }} {{ s|first }} {{ xs|join(', ') }} {{ xs|join }} {{ d|li"
     "st }} {{ s|list }} {{ xs|reverse|list }} {{ 'abc'|reverse }} {{ [3, 1, 2]|sort }} {{"
     " [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ [1, 2, 1, 3]|unique|l"
     "ist }} {{ xs|sum }} {{ xs|max }} {{ xs|min }}",
     kContext,
     "1 3 h 1, 2, 3 123 ['b', 'a'] ['h', 'é', 'l', 'l', 'o'] [3, 2, 1] cba [1, 2, 3] [3, "
     "2, 1] ['A', 'b', 'c'] [1, 2, 3] 6 3 1"},
    {"FiltersConv",
     "{{ '42'|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ 3.9|int }} {{ '2.5'"
     "|float }} {{ 3|float }} {{ 12|string ~ 'a' }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2"
     ".5|round }} {{ 3|round }} {{ 2.1|round(0, 'ceil') }}",
     "{}", "42 4 0 7 3 2.5 3.0 12a 3 2.57 2.0 3 3.0"},
    {"FiltersReplace",
     "{{ 'aaa'|replace('a', 'b') }} {{ 'aaa'|replace('a', 'b', 2) }} {{ 'ab'|replace('', '"
     "-') }} {{ s|replace('é', 'e') }}",
     kContext, "bbb bba -a-b- hello"},
    {"FiltersItems",
     "{% for k, v in d|items %}{{ k }}:{{ v }} {% endfor %}{{ d|dictsort }} {{ nothing|ite"
     "ms|list }}",
     kContext, "b:1 a:2 [('a', 2), ('b', 1)] []"},
    {"MapSelect",
     "{{ messages|map(attribute='role')|join(',') }} {{ messages|selectattr('role', 'equal"
     "to', 'user')|map(attribute='content')|list }} {{ messages|rejectattr('role', 'eq', '"
     "user')|list|length }} {{ xs|select('odd')|list }} {{ xs|reject('odd')|list }} {{ ['a"
     "', '', 'b']|select|list }} {{ ['a', 'b']|map('upper')|list }} {{ messages|selectattr"
     "('missing')|list }} {{ messages|map(attribute='nope', default='z')|list }}",
     kContext,
     "system,user,assistant ['Hi'] 2 [1, 3] [2] ['a', 'b'] ['A', 'B'] [] ['z', 'z', 'z']"},
    {"Tojson",
     "{{ d|tojson }} {{ d|tojson(indent=2) }} {{ 'é\"\\n\\u0001'|tojson }} {{ [1.0, 2, no"
     "ne, true, 'x']|tojson }} {{ []|tojson(indent=2) }} {{ {}|tojson(indent=4) }} {{ [[]]"
     "|tojson(indent=1) }} {{ d|tojson(sort_keys=true) }} {{ 'é'|tojson(ensure_ascii=true"
     ") }} {{ nested|tojson(indent='\\t') }} {{ d|tojson(separators=(',', ':')) }} {{ mess"
     "ages[0]|tojson }}",
     kContext,
     "{\"b\": 1, \"a\": 2} {\n  \"b\": 1,\n  \"a\": 2\n} \"é\\\"\\n\\u0001\" [1.0, 2, nul"
     "l, true, \"x\"] [] {} [\n []\n] {\"a\": 2, \"b\": 1} \"\\u00e9\" {\n\t\"x\": {\n\t\t"
     "\"y\": [\n\t\t\t10,\n\t\t\t20\n\t\t]\n\t}\n} {\"b\":1,\"a\":2} {\"role\": \"system\""
     ", \"content\": \"Be brief.\"}"},
    {"TojsonNestedIndent",
     "{{ {'type': 'function', 'function': {'name': 'f', 'parameters': {'a': [1, {'b': none"
     "}], 'c': {}}}}|tojson(indent=4) }}",
     "{}",
     "{\n    \"type\": \"function\",\n    \"function\": {\n        \"name\": \"f\",\n     "
     "   \"parameters\": {\n            \"a\": [\n                1,\n                {\n "
     "                   \"b\": null\n                }\n            ],\n            \"c\""
     ": {}\n        }\n    }\n}"},
    {"Indent",
     "{{ 'a\\nb\\n\\nc'|indent }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a\\n\\nb'|indent(2, bl"
     "ank=true) }}|{{ 'x\\ny'|indent('>') }}",
     "{}", "a\n    b\n\n    c|  a\n  b|a\n  \n  b|x\n>y"},
    {"MiscFilters",
     "{{ '<a href=\"x\">&'|e }} {{ 'one two  three'|wordcount }} {{ '<b>'|safe }} {{ messa"
     "ges|map(attribute='content')|map('length')|sum }} {{ d|attr('items') is callable }}",
     kContext, "&lt;a href=&#34;x&#34;&gt;&amp; 3 <b> 17 True"},
    {"StringMethods",
     "{{ '  x  '.strip() }}|{{ 'xxay'.lstrip('x') }}|{{ 'ayy'.rstrip('y') }}|{{ 'abc'.star"
     "tswith('ab') }}|{{ 'abc'.endswith('bc') }}|{{ 'abc'.startswith(('x', 'a')) }}|{{ 'a,"
     "b,,c'.split(',') }}|{{ '  a  b c '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a,b,c'"
     ".rsplit(',', 1) }}|{{ 'Hi'.lower() }}|{{ 'Hi'.upper() }}|{{ 'a-b'.replace('-', '+') "
     "}}|{{ 'hello world'.title() }}|{{ 'hELLO'.capitalize() }}",
     "{}",
     "x|ay|a|True|True|True|['a', 'b', '', 'c']|['a', 'b', 'c']|['a', 'b c']|['a,b', 'c']|"
     "hi|HI|a+b|Hello World|Hello"},
    {"StringMethods2",
     "{{ 'hello'.find('l') }} {{ 'hello'.rfind('l') }} {{ 'hello'.find('z') }} {{ 'hello'."
     "count('l') }} {{ ', '.join(['a', 'b']) }} {{ 'a\\nb\\r\\nc'.splitlines() }} {{ '123'"
     ".isdigit() }} {{ 'abc'.isalpha() }} {{ '  '.isspace() }} {{ 'ab'.islower() }} {{ 'AB"
     "'.isupper() }} {{ '{} and {}'.format(1, 'x') }} {{ '{name}!'.format(name='N') }} {{ "
     "'ab'.center(6, '*') }} {{ 'ab'.ljust(4) }}| {{ 'ab'.rjust(4, '0') }}",
     "{}", "2 3 -1 2 a, b ['a', 'b', 'c'] True True True True True 1 and x N! **ab** ab  | 00ab"},
    {"ThinkSplit",
     "{{ content.split('</think>')[-1].lstrip('\\n') }}|{{ content.split('</think>')[0].rs"
     "trip('\\n').split('<think>')[-1].lstrip('\\n') }}",
     R"json({"content": "<think>\nreason\n</think>\n\nanswer"})json", "answer|reason"},
    {"DictMethods",
     "{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 'dflt') }} {{ d.keys()|list }} {{ d."
     "values()|list }} {{ d.items()|list }} {{ 'a' in d.keys() }}",
     kContext, "2 None dflt ['b', 'a'] [1, 2] [('b', 1), ('a', 2)] True"},
    {"ListMethods", "{{ xs.index(2) }} {{ [1, 1, 2].count(1) }}", kContext, "1 2"},
    {"Globals",
     "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(3, 0, -1)|list }} {{ dict(a=1"
     ", b='x') }} {{ namespace(a=1).a }}",
     "{}", "[0, 1, 2] [1, 3, 5] [3, 2, 1] {'a': 1, 'b': 'x'} 1"},
    {"Unicode",
     "{{ s|upper }} {{ s[1] }} {{ s|length }} {{ 'ÀÉÎ Ωμέγα Привет'|lower }}"
     " {{ 'straße'|upper }} {{ '日本語'|length }} {{ '日本語'[1:] }} {{ '　x '|tr"
     "im }}|",
     kContext, "HÉLLO é 5 àéî ωμέγα привет STRASSE 3 本語 x|"},
    {"DictLiteralAccess",
     "{% set m = {'role': 'user', 'items': 5} %}{{ m.role }} {{ m['items'] }} {{ m.items i"
     "s callable }}",
     "{}", "user 5 True"},
    {"WhitespaceMix",
     "{%- for m in messages -%}\n  <{{ m.role }}>\n  {%- if m.content %} {{ m.content | tr"
     "im }}{% endif %}\n{%- endfor %}\n",
     kContext, "<system> Be brief.<user> Hi<assistant> Hello!"},
    {"NestedIfIndent",
     "{% for m in messages %}\n    {% if m.role == 'user' %}\n        U:{{ m.content }}\n "
     "   {% else %}\n        O:{{ m.content }}\n    {% endif %}\n{% endfor %}\n",
     kContext, "        O:Be brief.\n        U:Hi\n        O:Hello!\n"},
    {"FilterPrecedence",
     "{{ -1|abs }} {{ 'a' ~ 'b'|upper }} {{ '  x '|trim + '!' }} {{ not 'x' is string }} {"
     "{ xs|length > 2 }} {{ 1 + xs|length }}",
     kContext, "1 aB x! False True 4"},
    {"StringsAdjacentAndOps", "{{ 'a' 'b' 'c' }} {{ ('x', 'y') }} {{ (1) }}", "{}",
     "abc ('x', 'y') 1"},
    {"SetMessagesOverride",
     "{% set messages = messages[1:] %}{{ messages|length }}{% for m in messages %}{{ m.ro"
     "le }}{% endfor %}",
     kContext, "2userassistant"},
    {"BoolOutput", "{{ flag }} {{ not flag }} {{ 1 == 1 }}", kContext, "True False True"},
    {"IntFloatKeys", "{{ {1: 'a', 'k': 2}[1] }} {{ {1: 'a'}|tojson }}", "{}", "a {\"1\": \"a\"}"},
    {"UnicodeRepr",
     "{{ ['é \x07"
     "', 'a\\tb'] }}",
     "{}", "['é\\xa0\\x07', 'a\\tb']"},
    {"TplGemma",
     "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System ro"
     "le not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] "
     "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must a"
     "lternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
     "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% "
     "endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_tu"
     "rn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% en"
     "dif %}",
     R"json({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": " q "}], "bos_token": "<bos>", "add_generation_prompt": true})json",
     "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>"
     "\n<start_of_turn>user\nq<end_of_turn>\n<start_of_turn>model\n"},
    {"TplDeepseek",
     "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}"
     "{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true"
     ", system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'syste"
     "m' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_t"
     "oken}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'u"
     "ser' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endi"
     "f %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{% se"
     "t content = message['content'] %}{% if '</think>' in content %}{% set content = cont"
     "ent.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁"
     "of▁sentence｜>'}}{%- endif %}{%- endfor -%}{% if add_generation_prompt and not ns"
     ".is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}",
     R"json({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "x"}, {"role": "assistant", "content": "<think>hm</think>\n\nanswer"}], "bos_token": "<bos>", "add_generation_prompt": true})json",
     "<bos>Be brief.<｜User｜>Hi<｜Assistant｜>Hello!<｜end▁of▁sentence｜><｜Us"
     "er｜>x<｜Assistant｜>\n\nanswer<｜end▁of▁sentence｜><｜Assistant｜><think"
     ">\n"},
    {"TplPhi3",
     "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
     "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n'"
     " + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|a"
     "ssistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_g"
     "eneration_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}",
     R"json({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "eos_token": "<|endoftext|>", "add_generation_prompt": false})json",
     "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\nHello!<|end|>\n<|e"
     "ndoftext|>"},
    {"TplZephyr",
     "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' +"
     " message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|sy"
     "stem|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant"
     "' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if "
     "loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfo"
     "r %}",
     R"json({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "eos_token": "</s>", "add_generation_prompt": true})json",
     "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n<|assistant|"
     ">\n"},
    {"TplHermesMacro",
     "{%- macro json_to_python_type(json_spec) %}\n{%- set basic_type_map = {\n    \"strin"
     "g\": \"str\",\n    \"number\": \"float\",\n    \"integer\": \"int\",\n    \"boolean\""
     ": \"bool\"\n} %}\n\n{%- if basic_type_map[json_spec.type] is defined %}\n    {{- bas"
     "ic_type_map[json_spec.type] }}\n{%- elif json_spec.type == \"array\" %}\n    {{- \"l"
     "ist[\" +  json_to_python_type(json_spec|items) + \"]\"}}\n{%- elif json_spec.type =="
     " \"object\" %}\n    {%- if json_spec.additionalProperties is defined %}\n        {{-"
     " \"dict[str, \" + json_to_python_type(json_spec.additionalProperties) + ']'}}\n    {"
     "%- else %}\n        {{- \"dict\" }}\n    {%- endif %}\n{%- elif json_spec.type is it"
     "erable %}\n    {{- \"Union[\" }}\n    {%- for t in json_spec.type %}\n      {{- json"
     "_to_python_type({\"type\": t}) }}\n      {%- if not loop.last %}\n        {{- \",\" "
     "}}\n    {%- endif %}\n    {%- endfor %}\n    {{- \"]\" }}\n{%- else %}\n    {{- \"An"
     "y\" }}\n{%- endif %}\n{%- endmacro %}\n{%- for tool in tools %}\n{{- tool.name }}(\n"
     "{%- for param_name, param_fields in tool.parameters.properties|items %}\n{{- param_n"
     "ame + \": \" + json_to_python_type(param_fields) }}\n{%- if not loop.last %}, {% end"
     "if %}\n{%- endfor %})\n{% endfor %}",
     R"json({"tools": [{"name": "f", "parameters": {"properties": {"a": {"type": "string"}, "b": {"type": "object", "additionalProperties": {"type": "integer"}}, "c": {"type": ["string", "number"]}, "d": {"type": "array", "items": {"type": "boolean"}}}}}]})json",
     "f(a: str, b: dict[str, int], c: Union[str,float], d: list[Union[]])\n"},
    {"MacroSeesGlobals",
     "{% set g = 'G' %}{% macro m() %}{{ g }}{{ later }}{% endmacro %}{% set later = 'L' %"
     "}{{ m() }}",
     "{}", "GL"},
    {"MacroNoCallerLocals",
     "{% macro m() %}[{{ i }}]{% endmacro %}{% for i in [1, 2] %}{{ m() }}{% endfor %}", "{}",
     "[][]"},
    {"MacroDefaultsExpr", "{% macro m(a, b=a ~ '!') %}{{ a }}{{ b }}{% endmacro %}{{ m('x') }}",
     "{}", "xx!"},
    {"MacroInLoopBody",
     "{% for i in [1, 2] %}{% macro m() %}<{{ i }}>{% endmacro %}{{ m() }}{% endfor %}", "{}",
     "<1><2>"},
    {"RecursiveMacro",
     "{% macro fact(n) %}{% if n <= 1 %}1{% else %}{{ n * fact(n - 1)|int }}{% endif %}{% "
     "endmacro %}{{ fact(5) }}",
     "{}", "120"},
    {"BracesInStrings",
     "{{ '{{' }} {{ '}}' }} {{ '{% %}' }} { text } {{ {'a': {'b': 1}} }}{{ {'x': 1}['x'] }"
     "}",
     "{}", "{{ }} {% %} { text } {'a': {'b': 1}}1"},
    {"CommentWithTags", "a{# {% if %} {{ x }} #}b", "{}", "ab"},
    {"DashAtStart", "{%- if true -%}\n  x  \n{%- endif -%}\n", "{}", "x"},
    {"Sameas",
     "{{ none is sameas none }} {{ false is sameas false }} {{ 0 is sameas false }} {{ 1 i"
     "s sameas 1 }}",
     "{}", "True True False True"},
    {"NsUndefinedAttr",
     "{% set ns = namespace() %}{{ ns.x is defined }} [{{ ns.x }}] {% set ns.x = [1] %}{{ "
     "ns.x + [2] }}",
     "{}", "False [] [1, 2]"},
    {"ContentIndex",
     "{{ messages[1]['content'][0] }} {{ messages[1].content[-1] }} {{ messages[1]['conten"
     "t'][1:] }}",
     kContext, "H i i"},
    {"BoolMult", "{{ 'ab' * true }}|{{ 'ab' * false }}|{{ [1] * 2 }}", "{}", "ab||[1, 1]"},
    {"DefinedAnd",
     "{{ 'a' if x is defined and x else 'b' }} {{ 'a' if y is defined and y else 'b' }}",
     R"json({"y": 1})json", "b a"},
    {"NotPrecedence", "{{ not 1 == 2 }} {{ not 'a' in 'abc' }} {{ (not 1) == 2 }}", "{}",
     "True False False"},
    {"StringCompareOrder",
     "{{ 'B' < 'a' }} {{ 'é' > 'z' }} {{ [1, 2] < [1, 3] }} {{ [1] < [1, 0] }}", "{}",
     "True True True True"},
    {"TojsonUnicodeEscapes",
     "{{ '\\u2028 \\x7f \\ud7ff 😀'|tojson }} {{ '😀'|tojson(ensure_ascii=true) }} {{ "
     "1e100|tojson }} {{ 0.1|tojson }} {{ -5|tojson }}",
     "{}",
     "\"  \x7f"
     " ퟿ 😀\" \"\\ud83d\\ude00\" 1e+100 0.1 -5"},
    {"LoopOverTupleItems",
     "{% for pair in d|dictsort %}{{ pair[0] }}{{ pair[1] }}{{ pair }}{% endfor %}", kContext,
     "a2('a', 2)b1('b', 1)"},
    {"IntFilterBases",
     "{{ '0x1A'|int(0, 16) }} {{ '1_000'|int }} {{ ' 7 '|int }} {{ true|int }} {{ none|int"
     " }}",
     "{}", "26 1000 7 1 0"},
    {"ListOfDictsSort",
     "{{ messages|sort(attribute='role')|map(attribute='role')|list }} {{ messages|map(att"
     "ribute='role')|sort(reverse=true)|first }}",
     kContext, "['assistant', 'system', 'user'] user"},
    {"PercentFormat",
     "{{ '%s-%d' % ('a', 3) }} {{ '%05.1f|%-4s|%x|%3d' % (3.14159, 'ab', 255, 7) }} {{ '%("
     "k)s!' % {'k': 'v'} }} {{ '%s'|format('x') }} {{ '%s and %r'|format(1, 'q') }} {{ '10"
     "0%%' % () }} {{ '%.2s' % 'héllo' }}",
     "{}", "a-3 003.1|ab  |ff|  7 v! x 1 and 'q' 100% hé"},
    {"TupleSlice", "{{ (1, 2, 3)[1:] }} {{ (1,) }} {{ ('a', 'b')|list }}", "{}",
     "(2, 3) (1,) ['a', 'b']"},
    {"TplQwen3Part",
     "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %"
     "}\n{%- for message in messages[::-1] %}\n    {%- set index = (messages|length - 1) -"
     " loop.index0 %}\n    {%- if ns.multi_step_tool and message.role == \"user\" and mess"
     "age.content is string and not(message.content.startswith('<tool_response>') and mess"
     "age.content.endswith('</tool_response>')) %}\n        {%- set ns.multi_step_tool = f"
     "alse %}\n        {%- set ns.last_query_index = index %}\n    {%- endif %}\n{%- endfo"
     "r %}\n{%- for message in messages %}\n    {%- if message.content is string %}\n     "
     "   {%- set content = message.content %}\n    {%- else %}\n        {%- set content = "
     "'' %}\n    {%- endif %}\n    {%- if message.role == \"assistant\" %}\n        {%- se"
     "t reasoning_content = '' %}\n        {%- if message.reasoning_content is string %}\n"
     "            {%- set reasoning_content = message.reasoning_content %}\n        {%- el"
     "se %}\n            {%- if '</think>' in content %}\n                {%- set reasonin"
     "g_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('"
     "\\n') %}\n                {%- set content = content.split('</think>')[-1].lstrip('\\"
     "n') %}\n            {%- endif %}\n        {%- endif %}\n        {%- if loop.index0 >"
     " ns.last_query_index %}\n            {{- '<|im_start|>' + message.role + '\\n<think>"
     "\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') "
     "}}\n        {%- else %}\n            {{- '<|im_start|>' + message.role + '\\n' + con"
     "tent }}\n        {%- endif %}\n        {{- '<|im_end|>\\n' }}\n    {%- else %}\n    "
     "    {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n "
     "   {%- endif %}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start"
     "|>assistant\\n' }}\n    {%- if enable_thinking is defined and enable_thinking is fal"
     "se %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}\n{%- endif %}",
     R"json({"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nA1"}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "<think>r2</think>A2"}, {"role": "user", "content": "<tool_response>x</tool_response>"}, {"role": "assistant", "content": "A3", "reasoning_content": "r3"}], "add_generation_prompt": true, "enable_thinking": false})json",
     "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>use"
     "r\nQ2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\nA2<|im_end|>\n<|im_"
     "start|>user\n<tool_response>x</tool_response><|im_end|>\n<|im_start|>assistant\n<thi"
     "nk>\nr3\n</think>\n\nA3<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"},
};

class JinjaRender : public ::testing::TestWithParam<RenderCase> {};

TEST_P(JinjaRender, MatchesTransformers) {
  const RenderCase& c = GetParam();
  EXPECT_EQ(Render(c.tmpl, c.context), c.expected) << "template: " << c.tmpl;
}

INSTANTIATE_TEST_SUITE_P(Cases, JinjaRender, ::testing::ValuesIn(kRenderCases),
                         [](const auto& info) { return std::string(info.param.name); });

// ---- real chat templates (tests/data/chat_templates) ---------------------------------------

struct ChatCase {
  const char* tmpl;
  std::vector<ChatMessage> messages;
  bool add_generation_prompt;
  const char* bos;
  const char* eos;
  const char* expected;
};

const ChatCase kChatCases[] = {
    {"llama3",
     {{"system", "You are helpful."}, {"user", " Hi! "}},
     true,
     "<|begin_of_text|>",
     "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot"
     "_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>ass"
     "istant<|end_header_id|>\n\n"},
    {"llama3.1",
     {{"system", "Be brief."}, {"user", "Hi"}},
     true,
     "<|begin_of_text|>",
     "<|eot_id|>",
     "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Dat"
     "e: December 2023\nToday Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>u"
     "ser<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"llama2_chat",
     {{"system", "Sys"}, {"user", "Q1"}, {"assistant", " A1 "}, {"user", "Q2"}},
     false,
     "<s>",
     "</s>",
     "<s>[INST] <<SYS>>\nSys\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]"},
    {"mistral_v0.1",
     {{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}},
     false,
     "<s>",
     "</s>",
     "<s>[INST] Q1 [/INST]A1</s>[INST] Q2 [/INST]"},
    {"mistral_v0.2",
     {{"system", "Sys"}, {"user", "Q1"}},
     true,
     "<s>",
     "</s>",
     "<s> [INST] Sys\n\nQ1 [/INST]"},
    {"mistral_v0.3",
     {{"system", "Sys"}, {"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"}},
     true,
     "<s>",
     "</s>",
     "<s>[INST] Q1[/INST] A1</s>[INST] Sys\n\nQ2[/INST]"},
    {"qwen2",
     {{"user", "Hello"}},
     true,
     "<|endoftext|>",
     "<|im_end|>",
     "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<"
     "|im_end|>\n<|im_start|>assistant\n"},
    {"qwen2.5",
     {{"system", "S"}, {"user", "U"}},
     false,
     "<|endoftext|>",
     "<|im_end|>",
     "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"},
    {"smollm2",
     {{"user", "Hello"}},
     true,
     "<|im_start|>",
     "<|im_end|>",
     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
     "Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
};

TEST(ChatTemplate, RealTemplatesMatchTransformers) {
  for (const ChatCase& c : kChatCases) {
    ChatTemplateOptions options;
    options.add_generation_prompt = c.add_generation_prompt;
    options.bos_token = c.bos;
    options.eos_token = c.eos;
    const std::string source = ReadTemplate(c.tmpl);
    EXPECT_EQ(apply_chat_template(source, c.messages, options), c.expected) << c.tmpl;
    EXPECT_EQ(ChatTemplate(source).apply(c.messages, options), c.expected) << c.tmpl;
  }
}

TEST(ChatTemplate, RaiseExceptionPropagatesExactMessage) {
  ChatTemplateOptions options;
  options.bos_token = "<s>";
  options.eos_token = "</s>";
  const std::vector<ChatMessage> twice_user = {{"user", "one"}, {"user", "two"}};
  try {
    apply_chat_template(ReadTemplate("mistral_v0.1"), twice_user, options);
    FAIL() << "expected raise_exception to throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_STREQ(e.what(), "Conversation roles must alternate user/assistant/user/assistant/...");
  }
  const std::vector<ChatMessage> narrator = {{"user", "hi"}, {"narrator", "meanwhile"}};
  try {
    apply_chat_template(ReadTemplate("mistral_v0.2"), narrator, options);
    FAIL() << "expected raise_exception to throw";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "Only user and assistant roles are supported, with the exception of an initial "
                 "optional system message!");
  }
}

TEST(ChatTemplate, EmptyConversationIsRejected) {
  EXPECT_THROW(apply_chat_template(ReadTemplate("qwen2"), {}, ChatTemplateOptions{}), Error);
}

TEST(ChatTemplate, ContextHasMessagesTokensAndNoTools) {
  ChatTemplateOptions options;
  options.add_generation_prompt = false;
  options.bos_token = "B";
  options.eos_token = "E";
  const std::string tmpl =
      "{{ bos_token }}{% for m in messages %}{{ m|tojson }}{% endfor %}{{ eos_token }}"
      "|{{ add_generation_prompt }}|{{ tools is none }}|{{ documents is none }}";
  EXPECT_EQ(apply_chat_template(tmpl, {{"user", "hé\n"}}, options),
            "B{\"role\": \"user\", \"content\": \"hé\\n\"}E|False|True|True");
}

TEST(ChatTemplate, CachedTemplatesStayCorrect) {
  ChatTemplateOptions options;
  const std::vector<ChatMessage> chat = {{"user", "x"}};
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 6; ++i) {  // more templates than the cache holds
      const std::string n = std::to_string(i);
      std::string tmpl = "{{ messages[0].content }}";
      tmpl += n;
      std::string want = "x";
      want += n;
      EXPECT_EQ(apply_chat_template(tmpl, chat, options), want);
    }
  }
}

// ---- errors ----------------------------------------------------------------------------------

TEST(JinjaErrors, SyntaxErrorsNameLineAndColumn) {
  struct Case {
    const char* tmpl;
    const char* where;
    const char* what;
  };
  const Case cases[] = {
      {"line1\n{% if true %}\nno end", "line 3, column 7", "expected 'elif' or 'else' or 'endif'"},
      {"a\nb {{ 1 + }}", "line 2, column 10", "unexpected end of print statement"},
      {"{% frobnicate %}", "line 1, column 4", "unknown tag 'frobnicate'"},
      {"text {{ x ", "line 1, column 6", "expected '}}'"},
      {"x\n\ntext {# x ", "line 3, column 6", "missing end of comment tag"},
      {"{{ 'abc }}", "line 1, column 4", "unterminated string literal"},
      {"{% for x in xs %}\n{% endif %}", "line 2, column 4", "unknown tag 'endif'"},
      {"{% break %}", "line 1, column 4", "'break' outside of a loop"},
      {"{{ (1 + 2 }}", "line 1, column 11", "unexpected '}', expected ')'"},
      {"{% raw %}never closed", "line 1, column 1", "missing end of raw directive"},
  };
  for (const Case& c : cases) {
    Error e = RenderError(c.tmpl);
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << c.tmpl;
    const std::string msg = e.what();
    EXPECT_NE(msg.find("syntax error"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.where), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
  }
}

TEST(JinjaErrors, RaiseExceptionMessageIsExact) {
  Error e = RenderError(
      "{% for m in messages %}\n{% if m.role == 'bad' %}"
      "{{ raise_exception('Bad role: ' ~ m.role) }}{% endif %}{% endfor %}",
      R"({"messages": [{"role": "user"}, {"role": "bad"}]})");
  EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  EXPECT_STREQ(e.what(), "Bad role: bad");
}

TEST(JinjaErrors, RuntimeErrorsNameTheLine) {
  struct Case {
    const char* tmpl;
    const char* what;
  };
  const Case cases[] = {
      {"ok\n{{ nothing.attr }}", "'nothing' is undefined"},
      {"ok\n\n{{ 'a' + 1 }}", "unsupported operand type(s) for +: 'str' and 'int'"},
      {"{{ 1 // 0 }}", "division or modulo by zero"},
      {"{% for x in 5 %}{% endfor %}", "'int' object is not iterable"},
      {"{% set x = 1 %}{% set x.y = 2 %}", "can only assign attributes on namespace objects"},
      {"{{ nope() }}", "'nope' is undefined"},
      {"{{ 1|nofilter }}", "no filter named 'nofilter'"},
      {"{{ 1 is notatest }}", "no test named 'notatest'"},
      {"{{ 1 < 'a' }}", "'<' not supported between instances of 'int' and 'str'"},
      {"{{ [1]|tojson }}{{ nothing|tojson }}", "Object of type Undefined is not JSON serializable"},
      {"{% set ns = namespace() %}{% set ns._x = 1 %}", "underscore-prefixed"},
      {"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursed too deeply"},
  };
  for (const Case& c : cases) {
    Error e = RenderError(c.tmpl);
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << c.tmpl;
    const std::string msg = e.what();
    EXPECT_NE(msg.find("jinja template error at line"), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << msg;
  }
  EXPECT_NE(std::string(RenderError("ok\n\n{{ 'a' + 1 }}").what()).find("line 3"),
            std::string::npos);
}

TEST(JinjaErrors, HostileNestingIsRefusedNotACrash) {
  std::string parens = "{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}";
  EXPECT_NE(std::string(RenderError(parens).what()).find("nested too deeply"), std::string::npos);
  std::string blocks;
  for (int i = 0; i < 300; ++i) blocks += "{% if true %}";
  EXPECT_NE(std::string(RenderError(blocks).what()).find("nested too deeply"), std::string::npos);
  std::string chain = "{{ 1";
  for (int i = 0; i < 1500; ++i) chain += " + 1";
  EXPECT_NE(std::string(RenderError(chain + " }}").what()).find("nested too deeply"),
            std::string::npos);
  std::string huge = "{{ 1";
  for (int i = 0; i < 3000; ++i) huge += " + 1";
  EXPECT_NE(std::string(RenderError(huge + " }}").what()).find("too many tokens"),
            std::string::npos);
  std::string fine = "{{ 1";
  for (int i = 0; i < 200; ++i) fine += " + 1";
  EXPECT_EQ(Render(fine + " }}", "{}"), "201");
}

TEST(JinjaErrors, ContextMustBeAnObject) {
  EXPECT_THROW(render_jinja("x", nlohmann::json::array()), Error);
}

// ---- API -------------------------------------------------------------------------------------

TEST(JinjaApi, RenderJinjaWithPlainJson) {
  nlohmann::json context = {{"name", "tessera"}, {"n", 3}};
  EXPECT_EQ(render_jinja("{{ name|upper }} x{{ n * 2 }}", context), "TESSERA x6");
}

TEST(JinjaApi, OrderedContextKeepsKeyOrder) {
  const JinjaTemplate tmpl("{{ d|tojson }}");
  nlohmann::ordered_json ordered;
  ordered["d"]["z"] = 1;
  ordered["d"]["a"] = 2;
  EXPECT_EQ(tmpl.render(ordered), "{\"z\": 1, \"a\": 2}");
  nlohmann::json sorted;
  sorted["d"]["z"] = 1;
  sorted["d"]["a"] = 2;
  EXPECT_EQ(tmpl.render(sorted), "{\"a\": 2, \"z\": 1}");
}

TEST(JinjaApi, ParsedOnceRenderedManyTimesAcrossThreads) {
  const JinjaTemplate tmpl(ReadTemplate("llama3"));
  std::vector<std::thread> threads;
  std::vector<int> failures(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        nlohmann::json ctx = {{"messages", {{{"role", "user"}, {"content", std::to_string(i)}}}},
                              {"bos_token", "<b>"},
                              {"add_generation_prompt", false}};
        std::string want =
            "<b><|start_header_id|>user<|end_header_id|>\n\n" + std::to_string(i) + "<|eot_id|>";
        if (tmpl.render(ctx) != want) ++failures[t];
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures, std::vector<int>(4, 0));
}

TEST(JinjaApi, StrftimeNowUsesLocalTime) {
  std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char year[16];
  std::strftime(year, sizeof(year), "%Y", &local);
  EXPECT_EQ(render_jinja("{{ strftime_now('%Y') }}", nlohmann::json::object()), year);
}

}  // namespace
}  // namespace tessera
