// Command funclen fails when a production function is longer than a limit
// (default 80 lines, from its func keyword to its closing brace): a
// function that does not fit on a screen hides its structure. Test files,
// generated files, testdata and third_party are not checked, nor the
// directories -skip names (test harnesses shared by packages); -allow
// names functions (Type.Method or Func) still waiting to be split.
//
//	go run ./internal/lint/funclen [-max 80] [-skip dir,...] [-allow name,...] [dir ...]
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	limit := flag.Int("max", 80, "the longest a function may be, in lines")
	skip := flag.String("skip", "", "comma-separated directories not checked")
	allow := flag.String("allow", "", "comma-separated functions (Type.Method or Func) allowed over the limit")
	flag.Parse()
	c := checker{limit: *limit, skip: set(*skip), allow: set(*allow)}
	roots := flag.Args()
	if len(roots) == 0 {
		roots = []string{"."}
	}
	var long []string
	for _, root := range roots {
		found, err := c.check(root)
		if err != nil {
			fmt.Fprintln(os.Stderr, "funclen:", err)
			os.Exit(2)
		}
		long = append(long, found...)
	}
	if len(long) > 0 {
		sort.Strings(long)
		fmt.Fprintf(os.Stderr, "functions over %d lines:\n  %s\n", *limit, strings.Join(long, "\n  "))
		os.Exit(1)
	}
}

type checker struct {
	limit       int
	skip, allow map[string]bool
}

func set(list string) map[string]bool {
	m := map[string]bool{}
	for _, e := range strings.Split(list, ",") {
		if e = strings.TrimSpace(e); e != "" {
			m[filepath.Clean(e)] = true
		}
	}
	return m
}

// check returns "file:line name (n lines)" for every function under root
// longer than the limit.
func (c checker) check(root string) ([]string, error) {
	var long []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (d.Name() == "third_party" || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".") || c.skip[filepath.Clean(path)]) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				continue
			}
			start, end := fset.Position(fn.Pos()), fset.Position(fn.End())
			if n := end.Line - start.Line + 1; n > c.limit && !c.allow[name(fn)] {
				long = append(long, fmt.Sprintf("%s:%d %s (%d lines)", path, start.Line, name(fn), n))
			}
		}
		return nil
	})
	return long, err
}

func name(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if g, ok := t.(*ast.IndexExpr); ok {
		t = g.X
	}
	if g, ok := t.(*ast.IndexListExpr); ok {
		t = g.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fn.Name.Name
	}
	return fn.Name.Name
}
